//! the tgsecretd daemon (actors, sled store, Telegram link, D-Bus service).
//!
//! Not built yet: this crate is a shell that a later issue fills (see ARCHITECTURE.md).

fn main() {
    eprintln!("tgsecretd: not implemented yet; see ARCHITECTURE.md for the plan");
    std::process::exit(2);
}
