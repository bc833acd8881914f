// The webmail assets are embedded with include_dir: rebuild when any of them changes,
// including files added or removed.
fn main() {
    println!("cargo:rerun-if-changed=assets");
}
