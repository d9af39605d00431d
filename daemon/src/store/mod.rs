//! The daemon's durable store (being built).
