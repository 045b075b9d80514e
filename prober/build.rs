//! Rebuild when a migration is added: `sqlx::migrate!` embeds the files of
//! `migrations/` at compile time, and cargo does not watch that directory itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
