//! The process's DTLS identity: one ECDSA P-256 self-signed certificate, made at start-up (so it
//! rotates on every restart), whose SHA-256 fingerprint goes into every answer and offer.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509NameBuilder};

use crate::sdp::Fingerprint;

/// Certificate lifetime. Browsers ignore validity for DTLS-SRTP; a bounded one is still tidy.
const VALID_DAYS: u32 = 30;

#[derive(Debug, thiserror::Error)]
#[error("cannot create the DTLS certificate: {0}")]
pub struct DtlsIdentityError(#[from] openssl::error::ErrorStack);

/// Certificate + key the datapath's DTLS uses, and the fingerprint signaling advertises.
#[derive(Clone)]
pub struct DtlsIdentity {
    pub certificate: X509,
    pub private_key: PKey<Private>,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint.to_string())
            .finish_non_exhaustive()
    }
}

impl DtlsIdentity {
    pub fn generate() -> Result<Self, DtlsIdentityError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let private_key = PKey::from_ec_key(EcKey::generate(&group)?)?;

        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, "ringcast")?;
        let name = name.build();

        let mut serial = BigNum::new()?;
        serial.rand(64, MsbOption::MAYBE_ZERO, false)?;

        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&private_key)?;
        // Start a day early so peers with a skewed clock still accept it.
        let not_before = Asn1Time::from_unix(now_unix() - 86_400)?;
        b.set_not_before(&not_before)?;
        let not_after = Asn1Time::days_from_now(VALID_DAYS)?;
        b.set_not_after(&not_after)?;
        b.sign(&private_key, MessageDigest::sha256())?;
        let certificate = b.build();

        let fingerprint = Self::fingerprint_of(&certificate)?;
        Ok(DtlsIdentity {
            certificate,
            private_key,
            fingerprint,
        })
    }

    /// SHA-256 fingerprint of a certificate (RFC 8122), as SDP carries it.
    pub fn fingerprint_of(cert: &X509) -> Result<Fingerprint, DtlsIdentityError> {
        Ok(Fingerprint {
            algorithm: "sha-256".to_owned(),
            bytes: cert.digest(MessageDigest::sha256())?.to_vec(),
        })
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_p256_self_signed_with_matching_fingerprint() {
        let id = DtlsIdentity::generate().unwrap();
        let key = id.certificate.public_key().unwrap();
        assert_eq!(
            key.ec_key().unwrap().group().curve_name(),
            Some(Nid::X9_62_PRIME256V1)
        );
        assert!(id.certificate.verify(&key).unwrap());
        assert_eq!(id.fingerprint.bytes.len(), 32);
        let der = id.certificate.to_der().unwrap();
        let digest = openssl::sha::sha256(&der);
        assert_eq!(id.fingerprint.bytes, digest);
        // A restart rotates it.
        assert_ne!(
            DtlsIdentity::generate().unwrap().fingerprint,
            id.fingerprint
        );
    }
}
