//! Small shared helpers for reading PEM and X.509 data: certificates out of PEM, private keys
//! out of PEM, the P-256 check on a public key, and "does this key belong to this certificate".
//!
//! Everything here treats its input as untrusted (it may come from a peer, a token or disk):
//! no panics, errors that name what was being read.

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::CaError;

/// All certificates in a PEM text, in order. At least one, or an error.
pub(crate) fn certs_from_pem(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        out.push(item.map_err(|e| CaError::pem(what, e.to_string()))?);
    }
    if out.is_empty() {
        return Err(CaError::pem(what, "no CERTIFICATE block found"));
    }
    Ok(out)
}

/// The first certificate in a PEM text.
pub(crate) fn first_cert_from_pem(
    pem: &str,
    what: &str,
) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = certs_from_pem(pem, what)?;
    Ok(certs.swap_remove(0))
}

/// Parse DER into an X.509 certificate, refusing trailing garbage.
pub(crate) fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CaError> {
    match X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        Ok(_) => Err(CaError::cert(what, "trailing data after the certificate")),
        Err(e) => Err(CaError::cert(
            what,
            format!("not a DER X.509 certificate: {e}"),
        )),
    }
}

/// A private key from PEM, as rustls wants it.
pub(crate) fn private_key_der_from_pem(
    pem: &str,
    what: &str,
) -> Result<PrivateKeyDer<'static>, CaError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CaError::key(what, e.to_string()))
}

/// A private key from PEM, as rcgen wants it (for signing). Must be ECDSA P-256.
pub(crate) fn key_pair_from_pem(pem: &str, what: &str) -> Result<KeyPair, CaError> {
    let der = private_key_der_from_pem(pem, what)?;
    let key = KeyPair::try_from(&der).map_err(|e| CaError::key(what, e.to_string()))?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CaError::key(what, "not an ECDSA P-256 key"));
    }
    Ok(key)
}

/// Is this SubjectPublicKeyInfo an ECDSA P-256 key?
pub(crate) fn is_p256(spki: &SubjectPublicKeyInfo<'_>) -> bool {
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return false;
    }
    match spki.algorithm.parameters.as_ref().map(|p| p.as_oid()) {
        Some(Ok(curve)) => curve == OID_EC_P256,
        _ => false,
    }
}

/// Does `key` hold the private half of the public key in `cert`?
pub(crate) fn key_matches_cert(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.subject_public_key_info() == cert.public_key().raw
}
