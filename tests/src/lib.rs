//! End-to-end tests that start real processes (dbus-daemon, tgsecretd, tgsim).
//!
//! Empty until the daemon exists; see ARCHITECTURE.md.
