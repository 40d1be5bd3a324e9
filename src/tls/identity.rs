//! Who a certificate says its holder is: a node of a cluster (by the DNS
//! name `node-<id>.<cluster>.drover`), a client, or a CA.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// The suffix every node name ends with.
const SUFFIX: &str = "drover";

/// What a certificate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    Ca,
    Node,
    Client,
}

impl CertKind {
    /// The name `inspect` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Ca => "ca",
            CertKind::Node => "node",
            CertKind::Client => "client",
        }
    }
}

/// The DNS name a node's certificate carries, and that peers and
/// forwarding nodes verify: `node-<id>.<cluster>.drover`.
pub fn node_name(id: u64, cluster: &str) -> String {
    format!("node-{id}.{cluster}.{SUFFIX}")
}

/// A cluster id must be one DNS label to appear in node names.
pub fn check_cluster_name(cluster: &str) -> Result<(), String> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !cluster.starts_with('-')
        && !cluster.ends_with('-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "cluster `{cluster}` cannot be part of a certificate name: with TLS, a cluster id is \
             lower-case letters, digits and '-' (at most 63, not starting or ending with '-')"
        )),
    }
}

/// The DNS names and IP addresses of a certificate's subjectAltName.
pub fn alt_names(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(bytes) => ips.push(ip_text(bytes)),
                _ => {}
            }
        }
    }
    (dns, ips)
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let b: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            std::net::IpAddr::from(b).to_string()
        }
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(bytes);
            std::net::IpAddr::from(b).to_string()
        }
        _ => format!("{bytes:?}"),
    }
}

/// Whether a certificate is a CA, a node's or a client's.
pub fn kind_of(cert: &X509Certificate<'_>) -> CertKind {
    if cert.is_ca() {
        return CertKind::Ca;
    }
    let (dns, _) = alt_names(cert);
    if dns.iter().any(|d| parse_node_name(d).is_some()) {
        CertKind::Node
    } else {
        CertKind::Client
    }
}

/// `node-<id>.<cluster>.drover` → (id, cluster).
fn parse_node_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("node-")?;
    let rest = rest.strip_suffix(SUFFIX)?.strip_suffix('.')?;
    let (id, cluster) = rest.split_once('.')?;
    let id: u64 = id.parse().ok()?;
    (id > 0 && !cluster.is_empty() && !cluster.contains('.')).then_some((id, cluster))
}

/// The node of `cluster` that a DER certificate (already verified against
/// the CA by the TLS layer) names, if it is a node certificate of that
/// cluster; otherwise why not, with the certificate's subject.
pub fn node_of(der: &[u8], cluster: &str) -> Result<u64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable peer certificate: {e}"))?;
    let (dns, _) = alt_names(&cert);
    let mut ids = dns
        .iter()
        .filter_map(|d| parse_node_name(d))
        .filter(|(_, c)| *c == cluster)
        .map(|(id, _)| id);
    match (ids.next(), ids.next()) {
        (Some(id), None) if !cert.is_ca() => Ok(id),
        _ => Err(format!(
            "certificate `{}` is not a node certificate of this cluster",
            cert.subject()
        )),
    }
}

/// The subject of a DER certificate, for log lines.
pub fn subject_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "(unreadable)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_nothing_else_parses_as_one() {
        assert_eq!(parse_node_name(&node_name(3, "prod")), Some((3, "prod")));
        for bad in [
            "node-0.prod.drover",
            "node-x.prod.drover",
            "node-3.prod.evil.drover",
            "node-3..drover",
            "client-3.prod.drover",
            "node-3.prod.drover.evil",
        ] {
            assert_eq!(parse_node_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cluster_id_must_be_a_dns_label() {
        assert!(check_cluster_name("prod-eu-1").is_ok());
        for bad in ["", "Prod", "a.b", "-a", "a-", "a_b"] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
