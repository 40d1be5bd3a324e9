//! Reaching a cluster: the channel to every address of `--address` (see
//! `failover`), the unix socket of a node, and the token every call carries.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use super::failover::Failover;
use super::{tls, ClientOpts, Failure, EXIT_USAGE};
use crate::proto::v1::drover_client::DroverClient;

/// Client-side limit on any call, should a server stop answering entirely.
pub(super) const BACKSTOP_TIMEOUT: Duration = Duration::from_secs(180);

/// The API client every command uses: every call carries the token and
/// may go to any address of the list.
pub type Client = DroverClient<InterceptedService<Failover, TokenInterceptor>>;

/// Adds `authorization: Bearer SECRET` to every call, when a token is set.
#[derive(Clone)]
pub struct TokenInterceptor(Option<MetadataValue<Ascii>>);

impl TokenInterceptor {
    /// An interceptor sending `secret` (none: calls carry no token). Fails
    /// on a value that cannot be a header, which no real secret is.
    pub fn new(secret: Option<&str>) -> Result<TokenInterceptor, String> {
        match secret.map(str::trim).filter(|t| !t.is_empty()) {
            Some(secret) => MetadataValue::try_from(format!("Bearer {secret}"))
                .map(|v| TokenInterceptor(Some(v)))
                .map_err(|_| {
                    "the token contains characters a token never has; check --token / DROVER_TOKEN"
                        .to_string()
                }),
            None => Ok(TokenInterceptor(None)),
        }
    }
}

impl Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(crate::api::auth::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A client over one channel already made, every answer as the node gave
/// it: no retry (the tests' harness).
pub fn client_over(channel: Channel, address: &str, interceptor: TokenInterceptor) -> Client {
    DroverClient::with_interceptor(Failover::single(address.to_string(), channel), interceptor)
}

/// A client of every address of `--address`. Nothing is dialled yet: the
/// first call connects, and says which address failed and why.
pub async fn connect(opts: &ClientOpts) -> Result<Client, Failure> {
    let interceptor = TokenInterceptor::new(opts.token.as_deref()).map_err(|message| Failure {
        message,
        code: EXIT_USAGE,
    })?;
    let tls = tls::ClientTls::load(opts)?;
    let mut targets = Vec::new();
    for raw in opts
        .address
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let channel = match unix_socket_path(raw) {
            Some(path) => unix_channel(path),
            None => tls::endpoint(raw, tls.as_ref())
                .map_err(|why| Failure::usage(format!("--address {raw}: {why}")))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(BACKSTOP_TIMEOUT)
                .connect_lazy(),
        };
        targets.push((raw.to_string(), channel));
    }
    if targets.is_empty() {
        return Err(Failure::usage(
            "--address names no node (e.g. --address http://127.0.0.1:7700)",
        ));
    }
    let failover = Failover::new(targets, tls.is_some());
    Ok(DroverClient::with_interceptor(failover, interceptor))
}

/// The path of a `unix:///path` (or `unix:path`) address: a node's local
/// socket (`listen.socket`), where `drover acl bootstrap` needs no secret.
pub fn unix_socket_path(raw: &str) -> Option<&str> {
    raw.strip_prefix("unix://")
        .or_else(|| raw.strip_prefix("unix:"))
        .filter(|p| !p.is_empty())
}

/// Dials a node's unix socket whatever the URI (the API needs one; the
/// path is what counts).
#[derive(Clone)]
struct UnixConnector(std::path::PathBuf);

impl tower::Service<tonic::transport::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// The endpoint of a unix socket channel (plaintext: the socket's file mode
/// is the protection, and it never leaves the machine).
fn unix_endpoint() -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(2))
        .timeout(BACKSTOP_TIMEOUT)
}

/// A lazily connected channel over a unix socket.
fn unix_channel(path: &str) -> Channel {
    unix_endpoint().connect_with_connector_lazy(UnixConnector(path.into()))
}

/// A channel over a unix socket, connected now (the tests' harness).
pub async fn connect_unix(path: &str) -> Result<Channel, tonic::transport::Error> {
    unix_endpoint()
        .connect_with_connector(UnixConnector(path.into()))
        .await
}
