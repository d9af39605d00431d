//! End-to-end crypto (placeholder).
