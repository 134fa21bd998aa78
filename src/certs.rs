//! Certificate generation (rcgen): a CA and a serving certificate signed by it, in PEM. Used by
//! `serve --dev` and `certs`. Nothing here touches files.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA and a serving certificate/key that it signed.
pub struct GeneratedPair {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a CA named `ca_name` and a serving certificate for `names` (DNS names or IP addresses),
/// both valid from now for `days` days.
pub fn generate(ca_name: &str, names: &[String], days: i64) -> Result<GeneratedPair, String> {
    let fail = |e: rcgen::Error| format!("generating certificates: {e}");
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::days(days);

    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(fail)?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(fail)?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("localhost"),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::minutes(5);
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer).map_err(fail)?;

    Ok(GeneratedPair {
        ca_cert_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
