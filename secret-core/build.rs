fn main() {
    println!("cargo:rerun-if-changed=schema/secret_api.tl");
}
