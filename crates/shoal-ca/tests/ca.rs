//! Root CA, issuance, identities, join tokens, renewal points, credentials on disk.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use shoal_ca::{
    peer_identity, role_for, verify_ca_digest, CaError, JoinToken, NodeCredentials, NodeIdentity,
    Role, RootCa, DEFAULT_NODE_CERT_VALIDITY,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const CLUSTER: &str = "k3v9x0clusterid00000000000";
const NODE: &str = "7g2qkpw1lqv0cd3bhz5a0m9rx";

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn root_ca_has_swarmkit_subject_and_twenty_year_life() {
    let root = RootCa::generate(CLUSTER).unwrap();
    assert!(root.can_sign());
    assert_eq!(root.cluster_id(), Some(CLUSTER));
    let der = der_of(root.cert_pem());
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    let o: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["swarm-ca"]);
    assert_eq!(o, [CLUSTER]);
    assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    let twenty_years = 630_720_000;
    assert!(
        (twenty_years..=twenty_years + 3600).contains(&life),
        "lifetime {life}"
    );
    // P-256 key.
    assert_eq!(
        cert.public_key()
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap()
            .to_id_string(),
        "1.2.840.10045.3.1.7"
    );
}

#[test]
fn issued_certificate_carries_identity_and_verifies_against_the_root() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let req = NodeCredentials::generate_csr().unwrap();
    let cert_pem = root
        .issue(
            &req.csr_pem,
            NODE,
            Role::Manager,
            DEFAULT_NODE_CERT_VALIDITY,
        )
        .unwrap();

    let id = root.verify_pem(&cert_pem, SystemTime::now()).unwrap();
    assert_eq!(id.node_id, NODE);
    assert_eq!(id.role, Role::Manager);
    assert_eq!(id.cluster_id, CLUSTER);
    let life = id.not_after.duration_since(id.not_before).unwrap();
    assert!(
        life >= DEFAULT_NODE_CERT_VALIDITY
            && life <= DEFAULT_NODE_CERT_VALIDITY + Duration::from_secs(3601)
    );

    // Raw fields, as another X.509 reader sees them.
    let der = der_of(&cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let s = cert.subject();
    assert_eq!(s.iter_common_name().next().unwrap().as_str().unwrap(), NODE);
    assert_eq!(
        s.iter_organizational_unit()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "swarm-manager"
    );
    assert_eq!(
        s.iter_organization().next().unwrap().as_str().unwrap(),
        CLUSTER
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.is_ca());
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(sans, ["swarm-manager", NODE, "swarm-ca"]);

    // The certificate is for the CSR's key.
    let creds = req
        .into_credentials(cert_pem.clone(), root.cert_pem().to_owned())
        .unwrap();
    assert_eq!(creds.identity().unwrap(), id);
    assert_eq!(peer_identity(&der).unwrap(), id);

    // A worker certificate says worker and has no swarm-ca name.
    let req = NodeCredentials::generate_csr().unwrap();
    let worker = root
        .issue(
            &req.csr_pem,
            "worker1",
            Role::Worker,
            DEFAULT_NODE_CERT_VALIDITY,
        )
        .unwrap();
    let id = root.verify_pem(&worker, SystemTime::now()).unwrap();
    assert_eq!((id.node_id.as_str(), id.role), ("worker1", Role::Worker));
}

#[test]
fn certificate_from_another_ca_does_not_verify() {
    let ours = RootCa::generate(CLUSTER).unwrap();
    let theirs = RootCa::generate(CLUSTER).unwrap();
    let creds =
        NodeCredentials::issue_local(&theirs, NODE, Role::Manager, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    let err = ours
        .verify_pem(&creds.cert_pem, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, CaError::UntrustedCertificate(_)), "{err}");
    assert!(err.to_string().contains("not trusted"), "{err}");

    // Credentials mixing another CA's certificate with our root do not validate either.
    let mixed = NodeCredentials {
        root_pem: ours.cert_pem().to_owned(),
        ..creds.clone()
    };
    assert!(mixed.validate(SystemTime::now()).is_err());
    // Nor does a certificate paired with someone else's key.
    let other =
        NodeCredentials::issue_local(&theirs, "other", Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    let wrong_key = NodeCredentials {
        key_pem: other.key_pem.clone(),
        ..creds.clone()
    };
    let err = wrong_key.validate(SystemTime::now()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // Expired at a time past not_after.
    let later = SystemTime::now() + Duration::from_secs(200 * 24 * 3600);
    assert!(theirs.verify_pem(&creds.cert_pem, later).is_err());
}

#[test]
fn issuing_refuses_bad_input() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let req = NodeCredentials::generate_csr().unwrap();

    let err = root
        .issue("not a csr", NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");

    // A CSR for a P-384 key is refused: node keys are P-256.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&p384)
        .unwrap()
        .pem()
        .unwrap();
    let err = root
        .issue(&csr, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap_err();
    assert!(err.to_string().contains("P-256"), "{err}");

    // A CSR whose signature does not match its key (tampered body) is refused.
    let mut der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(req.csr_pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let n = der.len();
    der[n - 5] ^= 0x55;
    let tampered = pem_encode("CERTIFICATE REQUEST", &der);
    assert!(root
        .issue(&tampered, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .is_err());

    let err = root
        .issue(&req.csr_pem, "", Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap_err();
    assert!(err.to_string().contains("invalid node id"), "{err}");
    let err = root
        .issue(
            &req.csr_pem,
            "a/b",
            Role::Worker,
            DEFAULT_NODE_CERT_VALIDITY,
        )
        .unwrap_err();
    assert!(err.to_string().contains("invalid node id"), "{err}");
    let err = root
        .issue(&req.csr_pem, NODE, Role::Worker, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidValidity(_)), "{err}");

    // A worker holds the root without its key and cannot sign.
    let cert_only = RootCa::from_pem(root.cert_pem(), None).unwrap();
    assert!(!cert_only.can_sign());
    let err = cert_only
        .issue(&req.csr_pem, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap_err();
    assert!(matches!(err, CaError::CannotSign), "{err}");
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {tag}-----\n"));
    s
}

#[test]
fn root_from_pem_round_trips_and_checks_its_key() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let again = RootCa::from_pem(root.cert_pem(), root.key_pem()).unwrap();
    assert_eq!(again.digest(), root.digest());
    assert_eq!(again.cluster_id(), Some(CLUSTER));
    // It can issue, and what it issues verifies against the original.
    let creds =
        NodeCredentials::issue_local(&again, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    root.verify_pem(&creds.cert_pem, SystemTime::now()).unwrap();

    let other = RootCa::generate(CLUSTER).unwrap();
    let err = RootCa::from_pem(root.cert_pem(), other.key_pem()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // A node certificate is not a CA.
    let err = RootCa::from_pem(&creds.cert_pem, None).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
    assert!(RootCa::from_pem("garbage", None).is_err());
    assert!(RootCa::generate("bad cluster id!").is_err());
}

#[test]
fn token_digest_pins_the_root() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let digest = root.digest();
    assert_eq!(digest.len(), 50);
    assert!(digest
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));

    let token = JoinToken::generate(&digest).unwrap();
    let text = token.to_string();
    assert!(text.starts_with("SWMTKN-1-"));
    assert_eq!(text.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
    assert_eq!(token.digest(), digest);
    assert_eq!(JoinToken::for_root(&root).digest(), digest);
    let parsed = JoinToken::parse(&text).unwrap();
    assert_eq!(parsed.digest(), digest);
    assert!(parsed.matches(&token));
    assert!(
        !JoinToken::generate(&digest).unwrap().matches(&token),
        "fresh secrets differ"
    );

    verify_ca_digest(&parsed, root.cert_pem()).unwrap();

    // Another root is refused with swarmkit's words and the expected digest in hex.
    let impostor = RootCa::generate(CLUSTER).unwrap();
    let err = verify_ca_digest(&parsed, impostor.cert_pem()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!(
            "remote CA does not match fingerprint. Expected: {}",
            parsed.digest_hex()
        )
    );
    assert_eq!(parsed.digest_hex().len(), 64);
    // The digest covers the exact bytes.
    let altered = format!("{}\n", root.cert_pem());
    assert!(verify_ca_digest(&parsed, &altered).is_err());

    // Debug does not print the secret.
    let dbg = format!("{parsed:?}");
    assert!(
        dbg.contains(&digest) && !dbg.contains(&text[text.len() - 25..]),
        "{dbg}"
    );
}

#[test]
fn token_parse_errors_are_clear() {
    let digest = RootCa::generate(CLUSTER).unwrap().digest();
    let good = JoinToken::generate(&digest).unwrap().to_string();
    let secret = &good[good.len() - 25..];
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("hello", "expected SWMTKN-1-"),
        (
            &format!("SWMTKN-2-{digest}-{secret}"),
            "unsupported token version",
        ),
        (&format!("SWMKEY-1-{digest}-{secret}"), "expected SWMTKN-1-"),
        (
            &format!("SWMTKN-1-{}-{secret}", &digest[1..]),
            "50 characters",
        ),
        (
            &format!("SWMTKN-1-{}-{secret}", digest.to_uppercase()),
            "base36",
        ),
        (&format!("SWMTKN-1-{}-{secret}", "z".repeat(50)), "base36"),
        (
            &format!("SWMTKN-1-{digest}-{}", &secret[1..]),
            "secret part",
        ),
        (
            &format!("SWMTKN-1-{digest}-{secret}-x"),
            "expected SWMTKN-1-",
        ),
        (
            &format!("SWMTKN-1-{digest}-{}!", &secret[1..]),
            "secret part",
        ),
    ];
    for (input, needle) in cases {
        let err = JoinToken::parse(input).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid join token"), "{input:?}: {msg}");
        assert!(msg.contains(needle), "{input:?}: {msg}");
    }
    assert!(JoinToken::generate("short").is_err());
    // Whitespace around a pasted token is fine.
    assert!(JoinToken::parse(&format!("  {good}\n")).is_ok());
}

#[test]
fn role_for_matches_current_tokens_only() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let worker = JoinToken::for_root(&root).to_string();
    let manager = JoinToken::for_root(&root).to_string();
    assert_eq!(role_for(&worker, &worker, &manager), Some(Role::Worker));
    assert_eq!(role_for(&manager, &worker, &manager), Some(Role::Manager));
    assert_eq!(
        role_for(&format!(" {manager} "), &worker, &manager),
        Some(Role::Manager)
    );

    // Rotate the worker token: the old one stops working, the manager token still works.
    let rotated = JoinToken::for_root(&root).to_string();
    assert_eq!(role_for(&worker, &rotated, &manager), None);
    assert_eq!(role_for(&rotated, &rotated, &manager), Some(Role::Worker));
    assert_eq!(role_for(&manager, &rotated, &manager), Some(Role::Manager));

    // Garbage, empty, or a token of another swarm.
    assert_eq!(role_for("", "", ""), None);
    assert_eq!(role_for("SWMTKN-1-x-y", &worker, &manager), None);
    let other = JoinToken::for_root(&RootCa::generate(CLUSTER).unwrap()).to_string();
    assert_eq!(role_for(&other, &worker, &manager), None);
}

fn identity_with(not_before: SystemTime, lifetime: Duration, serial: Vec<u8>) -> NodeIdentity {
    NodeIdentity {
        node_id: NODE.into(),
        role: Role::Worker,
        cluster_id: CLUSTER.into(),
        not_before,
        not_after: not_before + lifetime,
        serial,
    }
}

#[test]
fn renewal_point_is_between_half_and_eighty_percent_and_fixed_per_certificate() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let life = Duration::from_secs(90 * 24 * 3600);
    let half = start + life / 2;
    let eighty = start + life * 4 / 5;
    let mut points = std::collections::BTreeSet::new();
    for i in 0u32..200 {
        let id = identity_with(start, life, i.to_be_bytes().to_vec());
        let at = id.renewal_time();
        assert!(at >= half && at <= eighty, "serial {i}");
        assert_eq!(at, id.clone().renewal_time(), "deterministic");
        assert!(!id.needs_renewal(start));
        assert!(!id.needs_renewal(half - Duration::from_secs(1)));
        assert!(!id.needs_renewal(at - Duration::from_secs(1)));
        assert!(id.needs_renewal(at));
        assert!(id.needs_renewal(eighty + Duration::from_secs(1)));
        assert!(id.needs_renewal(id.not_after + Duration::from_secs(1)));
        points.insert(at);
    }
    assert!(
        points.len() > 150,
        "renewal points should spread: {}",
        points.len()
    );

    // On real credentials: fresh is not due, due by 80%, always the same point.
    let root = RootCa::generate(CLUSTER).unwrap();
    let creds = NodeCredentials::issue_local(&root, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap();
    let id = creds.identity().unwrap();
    assert!(!creds.needs_renewal(SystemTime::now()));
    let life = id.not_after.duration_since(id.not_before).unwrap();
    assert!(creds.needs_renewal(id.not_before + life * 4 / 5 + Duration::from_secs(1)));
    assert_eq!(id.renewal_time(), creds.identity().unwrap().renewal_time());
    // Unreadable certificate: renew.
    let broken = NodeCredentials {
        cert_pem: "nope".into(),
        ..creds
    };
    assert!(broken.needs_renewal(SystemTime::now()));
}

#[test]
fn credentials_save_and_load_in_swarmkit_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootCa::generate(CLUSTER).unwrap();
    let creds =
        NodeCredentials::issue_local(&root, NODE, Role::Manager, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    creds.save(dir.path()).unwrap();

    for (name, mode) in [
        ("swarm-root-ca.crt", 0o644),
        ("swarm-node.crt", 0o644),
        ("swarm-node.key", 0o600),
    ] {
        let meta = std::fs::metadata(dir.path().join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("swarm-root-ca.crt")).unwrap(),
        root.cert_pem()
    );

    let loaded = NodeCredentials::load(dir.path()).unwrap();
    assert_eq!(loaded.cert_pem, creds.cert_pem);
    assert_eq!(*loaded.key_pem, *creds.key_pem);
    assert_eq!(loaded.root_pem, creds.root_pem);
    assert_eq!(loaded.identity().unwrap().node_id, NODE);
    // The key file is an ordinary PKCS#8 PEM when autolock is off.
    let key_text = std::fs::read_to_string(dir.path().join("swarm-node.key")).unwrap();
    assert!(
        key_text.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{key_text}"
    );

    // Debug never shows the key.
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));

    // A certificate from another CA on disk is refused on load.
    let other = RootCa::generate(CLUSTER).unwrap();
    let foreign =
        NodeCredentials::issue_local(&other, NODE, Role::Manager, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    std::fs::write(dir.path().join("swarm-root-ca.crt"), other.cert_pem()).unwrap();
    assert!(NodeCredentials::load(dir.path()).is_err());
    drop(foreign);

    // Missing directory: an error naming the file.
    let err = NodeCredentials::load(dir.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("swarm-node.key"), "{err}");
}

#[test]
fn interrupted_renewal_is_recovered_from_the_temporary_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootCa::generate(CLUSTER).unwrap();
    let old = NodeCredentials::issue_local(&root, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap();
    old.save(dir.path()).unwrap();
    // Renewal crashed after the key was replaced but before the certificate was renamed.
    let new = NodeCredentials::issue_local(&root, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
        .unwrap();
    std::fs::write(dir.path().join(".swarm-node.crt"), &new.cert_pem).unwrap();
    std::fs::write(dir.path().join("swarm-node.key"), new.key_pem.as_bytes()).unwrap();

    let loaded = NodeCredentials::load(dir.path()).unwrap();
    assert_eq!(loaded.cert_pem, new.cert_pem);
    assert!(!dir.path().join(".swarm-node.crt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("swarm-node.crt")).unwrap(),
        new.cert_pem
    );

    // A key matching neither certificate is an error, not a silent pick.
    let stranger =
        NodeCredentials::issue_local(&root, NODE, Role::Worker, DEFAULT_NODE_CERT_VALIDITY)
            .unwrap();
    std::fs::write(
        dir.path().join("swarm-node.key"),
        stranger.key_pem.as_bytes(),
    )
    .unwrap();
    let err = NodeCredentials::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn role_names() {
    assert_eq!(Role::Manager.to_string(), "swarm-manager");
    assert_eq!("worker".parse::<Role>().unwrap(), Role::Worker);
    assert_eq!("swarm-manager".parse::<Role>().unwrap(), Role::Manager);
    assert!("boss".parse::<Role>().is_err());
}
