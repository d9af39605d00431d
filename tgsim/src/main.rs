//! tgsim, a local Telegram server for secret chats.
//!
//! Not built yet: this crate is a shell that a later issue fills (see ARCHITECTURE.md).

fn main() {
    eprintln!("tgsim: not implemented yet; see ARCHITECTURE.md for the plan");
    std::process::exit(2);
}
