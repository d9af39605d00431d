//! the tgsecret command-line client.
//!
//! Not built yet: this crate is a shell that a later issue fills (see ARCHITECTURE.md).

fn main() {
    eprintln!("tgsecret: not implemented yet; see ARCHITECTURE.md for the plan");
    std::process::exit(2);
}
