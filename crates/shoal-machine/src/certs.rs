//! TLS material of a machine, laid out as docker-machine does, so that `shoal machine env NAME`
//! can point both the `docker` and the `shoal` CLI at the machine's daemon over
//! `tcp://IP:2376` with `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH=<machine dir>`.
//!
//! ```text
//!  ca.pem  ca-key.pem       the machine's CA (the key stays on the host, 0600)
//!  cert.pem key.pem         client certificate (extended key usage clientAuth)
//!  server.pem server-key.pem server certificate (serverAuth), SANs: the machine IP,
//!                           127.0.0.1, localhost and the machine name
//! ```
//!
//! Keys are ECDSA P-256. [`generate`] is idempotent: files that are present, parse, match their
//! key, chain to the CA, are within their validity period and (for the server certificate) name
//! the requested IP and name are kept; anything else is (re)issued. A new CA reissues both leaves.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::OffsetDateTime;

/// The CA certificate (`--tlscacert` of the daemon and of the clients).
pub const CA_CERT: &str = "ca.pem";
/// The CA private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The client certificate (docker's `$DOCKER_CERT_PATH/cert.pem`).
pub const CLIENT_CERT: &str = "cert.pem";
/// The client private key (docker's `$DOCKER_CERT_PATH/key.pem`).
pub const CLIENT_KEY: &str = "key.pem";
/// The daemon's certificate (`--tlscert`).
pub const SERVER_CERT: &str = "server.pem";
/// The daemon's private key (`--tlskey`).
pub const SERVER_KEY: &str = "server-key.pem";

/// Organization written in every certificate's subject.
const ORGANIZATION: &str = "shoal-machine";
/// Lifetime of the CA.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of the client and server certificates.
const LEAF_VALIDITY: Duration = Duration::from_secs(3 * 365 * 24 * 3600);
/// Certificates start this long before now, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why the TLS material could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A key or certificate could not be generated.
    #[error("generating the {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// The machine name cannot be a DNS subject alternative name.
    #[error("invalid machine name {0:?} for a certificate: not a DNS name")]
    Name(String),
    /// A freshly issued certificate did not verify (should not happen).
    #[error("the new {what} does not verify against the CA: {reason}")]
    Verify {
        /// Which certificate.
        what: &'static str,
        /// The verifier's message.
        reason: String,
    },
}

/// Writes (or keeps) the CA, client and server certificates of machine `name` at `machine_ip`
/// into `dir` (created if missing). See the module documentation for the files.
pub fn generate(dir: &Path, machine_ip: Ipv4Addr, name: &str) -> Result<(), CertError> {
    let name_san = dns_san(name)?;
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let server_names = server_names(machine_ip, name);

    let (ca_pem, ca_key, new_ca) = match load_ca(dir) {
        Some((pem, key)) => (pem, key, false),
        None => {
            let (pem, key) = new_ca(name)?;
            write_file(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&dir.join(CA_CERT), pem.as_bytes(), 0o644)?;
            (pem, key, true)
        }
    };
    let ca_der = first_cert(ca_pem.as_bytes()).ok_or_else(|| CertError::Verify {
        what: "CA certificate",
        reason: "unreadable PEM".to_string(),
    })?;
    let issuer =
        Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(|source| CertError::Generate {
            what: "CA issuer",
            source,
        })?;

    if new_ca || check_client(dir, &ca_der).is_err() {
        let mut params = leaf_params(&format!("{name} client"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) = issue(params, &issuer, "client certificate")?;
        write_file(&dir.join(CLIENT_KEY), key.as_bytes(), 0o600)?;
        write_file(&dir.join(CLIENT_CERT), cert.as_bytes(), 0o644)?;
        check_client(dir, &ca_der).map_err(|reason| CertError::Verify {
            what: "client certificate",
            reason,
        })?;
    }

    if new_ca || check_server(dir, &ca_der, &server_names).is_err() {
        let mut params = leaf_params(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(machine_ip)),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            dns_san("localhost")?,
            name_san,
        ];
        params.subject_alt_names.dedup();
        let (cert, key) = issue(params, &issuer, "server certificate")?;
        write_file(&dir.join(SERVER_KEY), key.as_bytes(), 0o600)?;
        write_file(&dir.join(SERVER_CERT), cert.as_bytes(), 0o644)?;
        check_server(dir, &ca_der, &server_names).map_err(|reason| CertError::Verify {
            what: "server certificate",
            reason,
        })?;
    }
    Ok(())
}

/// The daemon flags that serve the API with the material of `dir`, verifying clients:
/// `--tlsverify --tlscacert DIR/ca.pem --tlscert DIR/server.pem --tlskey DIR/server-key.pem`
/// (to go with `-H tcp://IP:2376`).
pub fn daemon_tls_args(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["--tlsverify".into()];
    for (flag, file) in [
        ("--tlscacert", CA_CERT),
        ("--tlscert", SERVER_CERT),
        ("--tlskey", SERVER_KEY),
    ] {
        args.push(flag.into());
        args.push(dir.join(file).into_os_string());
    }
    args
}

/// The names the server certificate must be valid for.
fn server_names(ip: Ipv4Addr, name: &str) -> Vec<ServerName<'static>> {
    let mut names = vec![
        ServerName::IpAddress(IpAddr::V4(ip).into()),
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    ];
    for n in ["localhost", name] {
        if let Ok(sn) = ServerName::try_from(n.to_string()) {
            names.push(sn);
        }
    }
    names
}

fn dns_san(name: &str) -> Result<SanType, CertError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) || name.parse::<IpAddr>().is_ok() {
        return Err(CertError::Name(name.to_string()));
    }
    name.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| CertError::Name(name.to_string()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

fn new_ca(name: &str) -> Result<(String, KeyPair), CertError> {
    let key = KeyPair::generate().map_err(|source| CertError::Generate {
        what: "CA key",
        source,
    })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, format!("{name} CA"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY);
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;
    Ok((cert.pem(), key))
}

fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY);
    params
}

/// Issues a certificate for a new key: (certificate PEM, key PEM).
fn issue(
    params: CertificateParams,
    issuer: &Issuer<'_, &KeyPair>,
    what: &'static str,
) -> Result<(String, String), CertError> {
    let key = KeyPair::generate().map_err(|source| CertError::Generate { what, source })?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| CertError::Generate { what, source })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `data` to `path` with `mode`, through a temporary file renamed into place.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(e)
    })?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(e)
    })
}

fn first_cert(pem: &[u8]) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).next()?.ok()
}

/// Loads the certificate at `cert` and the key at `key` and checks that they belong together.
fn load_pair(cert: &Path, key: &Path) -> Result<(CertificateDer<'static>, Vec<u8>), String> {
    let cert_pem = fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let der = first_cert(&cert_pem).ok_or_else(|| format!("{}: no certificate", cert.display()))?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    rustls::sign::CertifiedKey::from_der(vec![der.clone()], key_der, &provider())
        .map_err(|e| format!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok((der, key_pem))
}

/// The existing CA, when its certificate and key are readable, match, and it is currently valid
/// and a CA.
fn load_ca(dir: &Path) -> Option<(String, KeyPair)> {
    let (der, key_pem) = load_pair(&dir.join(CA_CERT), &dir.join(CA_KEY)).ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).ok()?;
    if !x509.validity().is_valid() || !x509.is_ca() {
        return None;
    }
    let key = KeyPair::from_pem(std::str::from_utf8(&key_pem).ok()?).ok()?;
    let pem = fs::read_to_string(dir.join(CA_CERT)).ok()?;
    Some((pem, key))
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(roots))
}

/// Checks `cert.pem`/`key.pem`: a matching pair, a client certificate chaining to the CA.
fn check_client(dir: &Path, ca: &CertificateDer<'static>) -> Result<(), String> {
    let (der, _) = load_pair(&dir.join(CLIENT_CERT), &dir.join(CLIENT_KEY))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
            .build()
            .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Checks `server.pem`/`server-key.pem`: a matching pair, a server certificate chaining to the
/// CA and valid for every name in `names`.
fn check_server(
    dir: &Path,
    ca: &CertificateDer<'static>,
    names: &[ServerName<'static>],
) -> Result<(), String> {
    let (der, _) = load_pair(&dir.join(SERVER_CERT), &dir.join(SERVER_KEY))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
            .build()
            .map_err(|e| e.to_string())?;
    for name in names {
        verifier
            .verify_server_cert(&der, &[], name, &[], UnixTime::now())
            .map_err(|e| format!("{name:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::extensions::GeneralName;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);

    fn der(dir: &Path, file: &str) -> CertificateDer<'static> {
        first_cert(&fs::read(dir.join(file)).expect("read")).expect("pem")
    }

    fn ca(dir: &Path) -> CertificateDer<'static> {
        der(dir, CA_CERT)
    }

    #[test]
    fn writes_docker_machine_layout_with_private_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("node1");
        generate(&dir, IP, "node1").expect("generate");
        for f in [
            CA_CERT,
            CA_KEY,
            CLIENT_CERT,
            CLIENT_KEY,
            SERVER_CERT,
            SERVER_KEY,
        ] {
            let meta = fs::metadata(dir.join(f)).expect(f);
            let mode = meta.permissions().mode() & 0o777;
            if f.ends_with("key.pem") {
                assert_eq!(mode, 0o600, "{f}");
            } else {
                assert_eq!(mode, 0o644, "{f}");
            }
        }
        assert!(!dir.join("ca.pem.tmp").exists());
    }

    #[test]
    fn client_certificate_verifies_against_the_ca_for_client_auth() {
        let tmp = tempfile::tempdir().expect("tempdir");
        generate(tmp.path(), IP, "node1").expect("generate");
        let ca = ca(tmp.path());
        check_client(tmp.path(), &ca).expect("client cert verifies");
        let client = der(tmp.path(), CLIENT_CERT);
        let (_, x509) = x509_parser::parse_x509_certificate(&client).expect("parse");
        let eku = x509
            .extended_key_usage()
            .expect("eku ext")
            .expect("eku present");
        assert!(eku.value.client_auth);
        assert!(!eku.value.server_auth);
        assert!(!x509.is_ca());
        // The client certificate is not a server certificate for the machine.
        assert!(check_server_der(&client, &ca, IP).is_err());
        // Another machine's CA does not accept it.
        let other = tempfile::tempdir().expect("tempdir");
        generate(other.path(), IP, "node1").expect("generate");
        assert!(check_client(tmp.path(), &self::ca(other.path())).is_err());
    }

    fn check_server_der(
        cert: &CertificateDer<'static>,
        ca: &CertificateDer<'static>,
        ip: Ipv4Addr,
    ) -> Result<(), rustls::Error> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(ca).expect("roots"),
            provider(),
        )
        .build()
        .expect("verifier");
        verifier
            .verify_server_cert(
                cert,
                &[],
                &ServerName::IpAddress(IpAddr::V4(ip).into()),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn server_certificate_names_the_machine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        generate(tmp.path(), IP, "node1").expect("generate");
        let server = der(tmp.path(), SERVER_CERT);
        let (_, x509) = x509_parser::parse_x509_certificate(&server).expect("parse");
        let san = x509.subject_alternative_name().expect("ext").expect("san");
        let mut ips = Vec::new();
        let mut dns = Vec::new();
        for n in &san.value.general_names {
            match n {
                GeneralName::IPAddress(b) => ips.push(b.to_vec()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
        assert_eq!(ips, vec![vec![10, 97, 0, 2], vec![127, 0, 0, 1]]);
        assert_eq!(dns, vec!["localhost".to_string(), "node1".to_string()]);
        let eku = x509.extended_key_usage().expect("ext").expect("eku");
        assert!(eku.value.server_auth);
        let ca = ca(tmp.path());
        check_server_der(&server, &ca, IP).expect("valid for the machine IP");
        check_server_der(&server, &ca, Ipv4Addr::LOCALHOST).expect("valid for 127.0.0.1");
        assert!(check_server_der(&server, &ca, Ipv4Addr::new(10, 97, 0, 3)).is_err());
    }

    #[test]
    fn is_idempotent_and_repairs_what_is_missing_or_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        generate(dir, IP, "node1").expect("generate");
        let read = |f: &str| fs::read(dir.join(f)).expect(f);
        let all = [
            CA_CERT,
            CA_KEY,
            CLIENT_CERT,
            CLIENT_KEY,
            SERVER_CERT,
            SERVER_KEY,
        ];
        let before: Vec<_> = all.iter().map(|f| read(f)).collect();
        generate(dir, IP, "node1").expect("again");
        let after: Vec<_> = all.iter().map(|f| read(f)).collect();
        assert_eq!(before, after, "valid files are kept");

        // A new IP reissues only the server certificate.
        let other_ip = Ipv4Addr::new(10, 97, 0, 9);
        generate(dir, other_ip, "node1").expect("new ip");
        assert_eq!(read(CA_CERT), before[0]);
        assert_eq!(read(CLIENT_CERT), before[2]);
        assert_ne!(read(SERVER_CERT), before[4]);
        check_server_der(&der(dir, SERVER_CERT), &ca(dir), other_ip).expect("new ip");

        // A missing client key reissues the client pair.
        fs::remove_file(dir.join(CLIENT_KEY)).expect("rm");
        generate(dir, other_ip, "node1").expect("repair");
        assert_ne!(read(CLIENT_CERT), before[2]);
        check_client(dir, &ca(dir)).expect("client");

        // A corrupt CA key replaces the CA and both leaves.
        fs::write(dir.join(CA_KEY), b"garbage").expect("write");
        let server_before = read(SERVER_CERT);
        generate(dir, other_ip, "node1").expect("new ca");
        assert_ne!(read(CA_CERT), before[0]);
        assert_ne!(read(SERVER_CERT), server_before);
        check_client(dir, &ca(dir)).expect("client");
        check_server_der(&der(dir, SERVER_CERT), &ca(dir), other_ip).expect("server");
    }

    #[test]
    fn daemon_flags_point_at_the_server_material() {
        let args = daemon_tls_args(Path::new("/m/node1"));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--tlsverify",
                "--tlscacert",
                "/m/node1/ca.pem",
                "--tlscert",
                "/m/node1/server.pem",
                "--tlskey",
                "/m/node1/server-key.pem"
            ]
        );
    }

    #[test]
    fn rejects_names_that_are_not_dns_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for bad in ["", "10.0.0.1", "bad name", "é"] {
            let err = generate(tmp.path(), IP, bad).expect_err(bad);
            assert!(matches!(err, CertError::Name(_)), "{bad}: {err}");
        }
    }
}
