//! TLS towards the daemon, as the docker CLI does it: the `--tls`, `--tlsverify`, `--tlscacert`,
//! `--tlscert` and `--tlskey` flags, the `DOCKER_TLS`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`
//! environment variables ([`TlsFlags::resolve`]), and the rustls client configuration built from
//! the files ([`client_config`]), shared by the raw HTTP path and the bollard transport.
//!
//! Precedence (docker CLI v28): a flag given on the command line wins over its environment
//! variable; `--tlsverify` given at all (even `=false`) or `DOCKER_TLS_VERIFY` non-empty turns
//! TLS on; the files default to `ca.pem`, `cert.pem`, `key.pem` in `$DOCKER_CERT_PATH`, else in
//! `$DOCKER_CONFIG`, else in `~/.docker`; a default client certificate or key that does not
//! exist is left out (no client certificate), an explicit one must exist. The CA file is read
//! whenever TLS is on; when verifying it is the only trusted root (no system roots), and the
//! daemon's certificate must name the host (IP or DNS name) of `-H`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::client::CliError;

/// Default CA file name in the certificate directory.
pub const DEFAULT_CA_FILE: &str = "ca.pem";
/// Default client certificate file name in the certificate directory.
pub const DEFAULT_CERT_FILE: &str = "cert.pem";
/// Default client key file name in the certificate directory.
pub const DEFAULT_KEY_FILE: &str = "key.pem";
/// Default port of `tcp://host` when TLS is on (docker's TLS port).
pub const DEFAULT_TLS_PORT: u16 = 2376;

/// The TLS flags as given on the command line (`None`: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// `--tls[=BOOL]`.
    pub tls: Option<bool>,
    /// `--tlsverify[=BOOL]`.
    pub tlsverify: Option<bool>,
    /// `--tlscacert PATH`.
    pub tlscacert: Option<PathBuf>,
    /// `--tlscert PATH`.
    pub tlscert: Option<PathBuf>,
    /// `--tlskey PATH`.
    pub tlskey: Option<PathBuf>,
}

/// The resolved TLS settings of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Verify the daemon's certificate against `ca` and its name against the host.
    pub verify: bool,
    /// The CA file (read whenever TLS is on, trusted when verifying).
    pub ca: PathBuf,
    /// The client certificate, if any.
    pub cert: Option<PathBuf>,
    /// The client key, if any.
    pub key: Option<PathBuf>,
}

impl TlsFlags {
    /// Combines the flags with the environment (`env` looks a variable up; `home` is the home
    /// directory) as docker does. `None`: plain HTTP.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Option<TlsOptions> {
        let set = |var: &str| env(var).filter(|v| !v.is_empty());
        let verify = self
            .tlsverify
            .unwrap_or_else(|| set("DOCKER_TLS_VERIFY").is_some());
        let tls =
            self.tlsverify.is_some() || verify || self.tls.unwrap_or(set("DOCKER_TLS").is_some());
        if !tls {
            return None;
        }
        let dir = set("DOCKER_CERT_PATH")
            .or_else(|| set("DOCKER_CONFIG"))
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".docker")))
            .unwrap_or_else(|| PathBuf::from(".docker"));
        let default_if_present = |given: &Option<PathBuf>, file: &str| match given {
            Some(p) => Some(p.clone()),
            None => {
                let p = dir.join(file);
                p.exists().then_some(p)
            }
        };
        Some(TlsOptions {
            verify,
            ca: self
                .tlscacert
                .clone()
                .unwrap_or_else(|| dir.join(DEFAULT_CA_FILE)),
            cert: default_if_present(&self.tlscert, DEFAULT_CERT_FILE),
            key: default_if_present(&self.tlskey, DEFAULT_KEY_FILE),
        })
    }

    /// [`TlsFlags::resolve`] against the process environment.
    pub fn resolve_from_env(&self) -> Option<TlsOptions> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        self.resolve(|v| std::env::var(v).ok(), home.as_deref())
    }
}

/// `Failed to initialize: ...`, docker's text for unusable TLS files.
fn init_error(detail: impl fmt::Display) -> CliError {
    CliError::msg(format!("Failed to initialize: {detail}"))
}

fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            io::ErrorKind::NotFound => "no such file or directory".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        init_error(format!(
            "unable to resolve docker endpoint: open {}: {reason}",
            path.display()
        ))
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `opts`, reading the files now so that a missing
/// or unusable one is reported by path before any connection is attempted.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let ca_pem = read_file(&opts.ca)?;
    let cert_pem = opts.cert.as_deref().map(read_file).transpose()?;
    let key_pem = opts.key.as_deref().map(read_file).transpose()?;

    let ca_name = opts
        .ca
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| opts.ca.display().to_string());
    let invalid_ca = || {
        init_error(format!(
            "failed to retrieve context tls info: {ca_name} seems invalid ({})",
            opts.ca.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut found = false;
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|_| invalid_ca())?;
        roots.add(cert).map_err(|_| invalid_ca())?;
        found = true;
    }
    if !found {
        return Err(invalid_ca());
    }

    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| init_error(format!("TLS setup: {e}")))?;
    let builder = if opts.verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            // `--tls` without `--tlsverify`: any server certificate, as docker does.
            .with_custom_certificate_verifier(shoal_ca::tls::accept_any_server_cert(
                provider.clone(),
            ))
    };
    let config = match (cert_pem, key_pem) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert_pem), Some(key_pem)) => {
            let (cert_path, key_path) = match (&opts.cert, &opts.key) {
                (Some(c), Some(k)) => (c.as_path(), k.as_path()),
                _ => return Err(init_error("TLS setup: missing client certificate or key")),
            };
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    init_error(format!(
                        "failed to retrieve context tls info: tls: failed to find any PEM data in certificate input ({})",
                        cert_path.display()
                    ))
                })?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                init_error(format!(
                    "failed to retrieve context tls info: no valid private key found ({})",
                    key_path.display()
                ))
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                init_error(format!(
                    "failed to retrieve context tls info: {} and {}: {}",
                    cert_path.display(),
                    key_path.display(),
                    describe_rustls(&e)
                ))
            })?
        }
        (Some(_), None) | (None, Some(_)) => {
            let (have, missing) = if opts.cert.is_some() {
                (opts.cert.as_deref(), DEFAULT_KEY_FILE)
            } else {
                (opts.key.as_deref(), DEFAULT_CERT_FILE)
            };
            return Err(init_error(format!(
                "failed to retrieve context tls info: {} has no matching {missing}: give both --tlscert and --tlskey",
                have.map(|p| p.display().to_string()).unwrap_or_default()
            )));
        }
    };
    Ok(Arc::new(config))
}

/// The name the daemon's certificate must carry: the host part of `host:port`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, CliError> {
    let (host, _) = crate::client::split_host_port(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| CliError::msg(format!("invalid TLS server name {host:?}")))
}

/// Describes a TLS failure the way Go's `crypto/tls` does (what the docker CLI prints).
pub fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => {
            let why = match c {
                CertificateError::UnknownIssuer => {
                    "x509: certificate signed by unknown authority".to_string()
                }
                // A CA of the same name but another key (e.g. another machine's CA).
                CertificateError::BadSignature => {
                    "x509: certificate signed by unknown authority (its signature does not verify against the trusted CA)".to_string()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    format!("x509: certificate is not valid for this host ({c})")
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    format!("x509: certificate has expired or is not yet valid ({c})")
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    "x509: certificate specifies an incompatible key usage".to_string()
                }
                other => format!("x509: {other}"),
            };
            format!("tls: failed to verify certificate: {why}")
        }
        E::AlertReceived(alert) => format!("remote error: tls: {}", alert_text(*alert)),
        other => format!("tls: {other}"),
    }
}

fn alert_text(a: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match a {
        A::BadCertificate => "bad certificate".to_string(),
        A::CertificateRequired => "certificate required".to_string(),
        A::UnknownCA => "unknown certificate authority".to_string(),
        A::HandshakeFailure => "handshake failure".to_string(),
        A::DecryptError => "error decrypting message".to_string(),
        A::CertificateExpired => "expired certificate".to_string(),
        A::UnsupportedCertificate => "unsupported certificate".to_string(),
        A::ProtocolVersion => "protocol version not supported".to_string(),
        other => format!("{other:?}"),
    }
}

/// The rustls error inside an I/O error from a TLS stream, if any.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(flags: &TlsFlags, vars: &[(&str, &str)], home: &Path) -> Option<TlsOptions> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        flags.resolve(|k| env.get(k).cloned(), Some(home))
    }

    #[test]
    fn tls_is_off_unless_asked() {
        let home = tempfile::tempdir().expect("tmp");
        assert_eq!(resolve(&TlsFlags::default(), &[], home.path()), None);
        assert_eq!(
            resolve(
                &TlsFlags::default(),
                &[("DOCKER_TLS_VERIFY", ""), ("DOCKER_TLS", "")],
                home.path()
            ),
            None
        );
        let off = TlsFlags {
            tls: Some(false),
            ..TlsFlags::default()
        };
        assert_eq!(resolve(&off, &[("DOCKER_TLS", "1")], home.path()), None);
    }

    #[test]
    fn docker_tls_verify_with_any_value_verifies_with_cert_path_files() {
        let home = tempfile::tempdir().expect("tmp");
        let certs = tempfile::tempdir().expect("tmp");
        for f in [DEFAULT_CA_FILE, DEFAULT_CERT_FILE, DEFAULT_KEY_FILE] {
            std::fs::write(certs.path().join(f), "x").expect("write");
        }
        let dir = certs.path().to_string_lossy().into_owned();
        for v in ["1", "0", "false", "yes"] {
            let o = resolve(
                &TlsFlags::default(),
                &[("DOCKER_TLS_VERIFY", v), ("DOCKER_CERT_PATH", &dir)],
                home.path(),
            )
            .expect("tls on");
            assert!(o.verify, "{v}");
            assert_eq!(o.ca, certs.path().join("ca.pem"));
            assert_eq!(o.cert, Some(certs.path().join("cert.pem")));
            assert_eq!(o.key, Some(certs.path().join("key.pem")));
        }
    }

    #[test]
    fn defaults_to_home_docker_and_drops_absent_client_files() {
        let home = tempfile::tempdir().expect("tmp");
        let o = resolve(&TlsFlags::default(), &[("DOCKER_TLS", "1")], home.path()).expect("on");
        assert!(!o.verify);
        assert_eq!(o.ca, home.path().join(".docker/ca.pem"));
        assert_eq!(o.cert, None);
        assert_eq!(o.key, None);
        let cfg = tempfile::tempdir().expect("tmp");
        let o = resolve(
            &TlsFlags::default(),
            &[
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CONFIG", &cfg.path().to_string_lossy()),
            ],
            home.path(),
        )
        .expect("on");
        assert_eq!(o.ca, cfg.path().join("ca.pem"));
    }

    #[test]
    fn flags_override_the_environment() {
        let home = tempfile::tempdir().expect("tmp");
        // --tlsverify=false still means TLS, without verification.
        let f = TlsFlags {
            tlsverify: Some(false),
            ..TlsFlags::default()
        };
        let o = resolve(&f, &[("DOCKER_TLS_VERIFY", "1")], home.path()).expect("tls");
        assert!(!o.verify);
        // Explicit files are kept even when missing (reported when read).
        let f = TlsFlags {
            tlsverify: Some(true),
            tlscacert: Some("/x/my-ca.pem".into()),
            tlscert: Some("/x/c.pem".into()),
            tlskey: Some("/x/k.pem".into()),
            ..TlsFlags::default()
        };
        let o = resolve(&f, &[("DOCKER_CERT_PATH", "/elsewhere")], home.path()).expect("tls");
        assert!(o.verify);
        assert_eq!(o.ca, PathBuf::from("/x/my-ca.pem"));
        assert_eq!(o.cert, Some(PathBuf::from("/x/c.pem")));
        assert_eq!(o.key, Some(PathBuf::from("/x/k.pem")));
        // --tls alone: encrypted, not verified.
        let f = TlsFlags {
            tls: Some(true),
            ..TlsFlags::default()
        };
        assert!(!resolve(&f, &[], home.path()).expect("tls").verify);
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let opts = TlsOptions {
            verify: true,
            ca: dir.path().join("ca.pem"),
            cert: None,
            key: None,
        };
        let e = client_config(&opts).expect_err("missing ca").to_string();
        assert_eq!(
            e,
            format!(
                "Failed to initialize: unable to resolve docker endpoint: open {}: no such file or directory",
                dir.path().join("ca.pem").display()
            )
        );
        std::fs::write(dir.path().join("ca.pem"), "not a pem").expect("write");
        let e = client_config(&opts).expect_err("bad ca").to_string();
        assert!(e.contains("ca.pem seems invalid"), "{e}");
        let opts = TlsOptions {
            cert: Some(dir.path().join("cert.pem")),
            key: Some(dir.path().join("key.pem")),
            ..opts
        };
        let e = client_config(&opts).expect_err("missing cert").to_string();
        assert!(
            e.contains(&format!("open {}:", dir.path().join("cert.pem").display())),
            "{e}"
        );
    }

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(
            server_name("127.0.0.1:2376").expect("ip"),
            ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
        );
        assert!(matches!(
            server_name("example.com:2376").expect("dns"),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("[::1]:2376").expect("v6"),
            ServerName::IpAddress(_)
        ));
    }

    #[test]
    fn go_style_texts() {
        assert_eq!(
            describe_rustls(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        assert_eq!(
            describe_rustls(&rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            )),
            "remote error: tls: certificate required"
        );
    }
}
