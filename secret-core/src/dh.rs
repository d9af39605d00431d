//! Diffie-Hellman (placeholder).
