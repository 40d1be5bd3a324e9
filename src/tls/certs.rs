//! Making and reading the cluster's certificates, without openssl
//! (`drover tls ca create`, `drover tls cert create`, `drover tls cert
//! inspect`).
//!
//! Three kinds, told apart by what they carry:
//! - the CA: self-signed, may sign certificates and nothing else;
//! - a node certificate: DNS name `node-<id>.<cluster>.drover` (its
//!   identity on the peer port), the node's advertised names and IPs, for
//!   server and client authentication;
//! - a client certificate (the CLI, scripts): common name `client-<name>`,
//!   client authentication only, and no node name, so it can never pass
//!   as a node or a server.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::identity::{node_name, CertKind};

/// Default validity of a CA, in days (10 years).
pub const CA_DAYS: u32 = 3650;
/// Default validity of a node or client certificate, in days.
pub const CERT_DAYS: u32 = 365;

/// Why a certificate could not be made or read; says which file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable {what}: {detail}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("cannot make the certificate: {0}")]
    Make(#[from] rcgen::Error),
}

/// The files a `create` wrote.
#[derive(Debug)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a certificate is for.
#[derive(Debug)]
pub enum Subject {
    /// A node of `cluster`, also reachable at these names and IPs.
    Node {
        id: u64,
        cluster: String,
        dns: Vec<String>,
        ips: Vec<IpAddr>,
    },
    /// A client (CLI user, script) called `name`.
    Client { name: String },
}

/// Makes a CA in `out_dir` (`ca.pem`, `ca-key.pem`).
pub fn create_ca(out_dir: &Path, days: u32) -> Result<Written, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("Drover CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_pair(out_dir, "ca", &cert.pem(), &key.serialize_pem())
}

/// Makes a node or client certificate signed by the CA in `ca_dir`, into
/// `out_dir` (`node-ID.pem` / `client-NAME.pem` and their `-key.pem`);
/// existing files are replaced (that is how a certificate is renewed).
pub fn create_cert(
    ca_dir: &Path,
    subject: &Subject,
    out_dir: &Path,
    days: u32,
) -> Result<Written, CertError> {
    let ca_cert_path = ca_dir.join("ca.pem");
    let ca_key_path = ca_dir.join("ca-key.pem");
    let ca_cert = read(&ca_cert_path)?;
    let ca_key_pem = read(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::Invalid {
        path: ca_key_path.clone(),
        what: "CA key",
        detail: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).map_err(|e| CertError::Invalid {
        path: ca_cert_path.clone(),
        what: "CA certificate",
        detail: e.to_string(),
    })?;
    let (mut params, stem) = match subject {
        Subject::Node {
            id,
            cluster,
            dns,
            ips,
        } => {
            if *id == 0 {
                return Err(CertError::Usage("--node: node ids start at 1".into()));
            }
            super::identity::check_cluster_name(cluster).map_err(CertError::Usage)?;
            let own = node_name(*id, cluster);
            let mut names = vec![own.clone()];
            names.extend(dns.iter().cloned());
            let mut params = CertificateParams::new(names)?;
            params
                .subject_alt_names
                .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
            params.distinguished_name = name(&own);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            (params, format!("node-{id}"))
        }
        Subject::Client { name: client } => {
            if client.is_empty()
                || !client
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(CertError::Usage(format!(
                    "--client `{client}`: use letters, digits, '-', '_' and '.'"
                )));
            }
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = name(&format!("client-{client}"));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            (params, format!("client-{client}"))
        }
    };
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(out_dir, &stem, &cert.pem(), &key.serialize_pem())
}

/// What `drover tls cert inspect` prints of a certificate.
#[derive(Debug)]
pub struct Inspected {
    pub subject: String,
    pub issuer: String,
    pub kind: CertKind,
    pub dns_names: Vec<String>,
    pub ips: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Seconds until it expires (negative: expired).
    pub expires_in_secs: i64,
}

/// Reads the first certificate of a PEM file.
pub fn inspect(path: &Path) -> Result<Inspected, CertError> {
    let pem = read(path)?;
    let invalid = |detail: String| CertError::Invalid {
        path: path.to_path_buf(),
        what: "certificate",
        detail,
    };
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| invalid(e.to_string()))?;
    let (dns_names, ips) = super::identity::alt_names(&cert);
    let kind = super::identity::kind_of(&cert);
    let not_after = cert.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(Inspected {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        kind,
        dns_names,
        ips,
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
        expires_in_secs: not_after - now,
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Drover");
    dn
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks slightly behind the one that made it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `STEM.pem` and `STEM-key.pem` (mode 0600) into `dir`, each
/// through a temp file renamed into place, so a renewal never leaves half a
/// certificate where a node reads it.
fn write_pair(dir: &Path, stem: &str, cert: &str, key: &str) -> Result<Written, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    write_file(&key_path, key, 0o600)?;
    write_file(&cert_path, cert, 0o644)?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
    })
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}
