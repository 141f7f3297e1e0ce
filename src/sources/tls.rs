//! TLS for device clients: system roots plus an optional CA file, an optional SHA-256 pin of
//! the leaf certificate (self-signed Net2 servers and cameras are normal), or an explicit
//! `insecure` switch. Always the ring provider.

use crate::config::TlsConfig;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's root certificates, read once and shared by every client that uses them (a
/// store per client was ~140 parsed certificates each: the Net2 client, every camera, the MQTT
/// connection, the Apptive and GATE clients). Read at the first use: a CA added to the system
/// later is seen after a restart.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            Arc::new(roots)
        })
        .clone()
}

pub fn client_config(cfg: &TlsConfig) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::with_source(ErrorKind::Internal, "unable to set up TLS", e))?;
    if cfg.insecure || cfg.pin_sha256.is_some() {
        if cfg.insecure {
            tracing::warn!("TLS certificate verification is disabled (tls.insecure: true)");
        }
        let pin = cfg.pin_sha256.as_deref().map(parse_pin).transpose()?;
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin,
                provider: provider(),
            }))
            .with_no_client_auth());
    }
    let Some(f) = &cfg.ca_file else {
        return Ok(builder
            .with_root_certificates(system_roots())
            .with_no_client_auth());
    };
    let mut roots = (*system_roots()).clone();
    let pem = std::fs::read(f).ctx(ErrorKind::Config, || {
        format!("unable to read CA file {}", f.display())
    })?;
    let mut n = 0;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("invalid PEM in {}", f.display()),
                e,
            )
        })?;
        roots.add(c).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("invalid CA certificate in {}", f.display()),
                e,
            )
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::new(
            ErrorKind::Config,
            format!("no certificate found in CA file {}", f.display()),
        ));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

use rustls_pki_types::pem::PemObject;

fn parse_pin(s: &str) -> Result<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(Error::new(
            ErrorKind::Config,
            "pin_sha256 must be 64 hex digits",
        ));
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| Error::new(ErrorKind::Config, "pin_sha256 must be hex"))?;
    }
    Ok(out)
}

/// Hex SHA-256 of a DER certificate, as `pin_sha256` expects.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts exactly the pinned leaf (or anything, when no pin and `insecure`). Handshake
/// signatures are still verified, so a pinned certificate cannot be replayed without its key.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) => {
                let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
                if got.as_ref() == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "certificate does not match pin_sha256 (server presented {})",
                        fingerprint(end_entity.as_ref())
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
