//! OpenSSL interop and virtgate-pki CLI tests (written by the PKI work).
