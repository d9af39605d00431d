//! TL: the end-to-end schema (placeholder; generated from `schema/secret_api.tl`).
