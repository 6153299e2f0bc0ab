//! The run's certificate authority: made fresh for every run, its key held only in memory,
//! it signs one server certificate per node (subject alternative name = the node's name).
//! Every Synapse trusts exactly this CA for federation (`federation_custom_ca_list`), so
//! servers verify each other as on the real network, with no public CA involved.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("could not make the run's TLS certificate authority: {0}")]
    Ca(#[source] rcgen::Error),
    #[error(
        "could not make a TLS certificate for node {name:?}: {source} \
         (node names must be valid DNS names)"
    )]
    Node {
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A node's certificate and private key, PEM.
#[derive(Debug, Clone)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct RunCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for RunCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCa").finish_non_exhaustive()
    }
}

impl RunCa {
    /// A new CA named after the run (`label` goes into its common name, to tell runs apart).
    pub fn new(label: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Ca)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("meshsim run CA {label}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(PkiError::Ca)?;
        let cert = params.self_signed(&key).map_err(PkiError::Ca)?;
        Ok(RunCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate, for `federation_custom_ca_list` and for clients.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `name`, which is its only subject alternative name.
    pub fn issue(&self, name: &str) -> Result<NodeCert, PkiError> {
        let node_err = |source| PkiError::Node {
            name: name.to_owned(),
            source,
        };
        let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(node_err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(node_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(node_err)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_come_from_the_run_ca() {
        let ca = RunCa::new("test").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let node = ca.issue("n1").unwrap();
        assert!(node.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(node.key_pem.contains("PRIVATE KEY"));
        assert_ne!(node.cert_pem, ca.cert_pem());
    }
}
