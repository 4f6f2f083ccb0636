//! Writes the man pages, generated from the same clap definitions the
//! binaries parse with, so they cannot drift from `--help`.
//!
//! ```sh
//! cargo run --example man -- target/man     # then: man -l target/man/upcased.8
//! ```
//!
//! The Debian package (`cargo deb`, see Cargo.toml) installs what this writes.

use std::path::PathBuf;

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "target/man".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let pages = [
        (upcase::cli::DaemonArgs::command(), "8"),
        (upcase::client::ClientArgs::command(), "1"),
        (upcase::bench::Options::command(), "1"),
    ];
    for (command, section) in pages {
        let command = command.version(env!("CARGO_PKG_VERSION"));
        let name = command.get_name().to_owned();
        let man = clap_mangen::Man::new(command).section(section);
        let mut page = Vec::new();
        man.render(&mut page)?;
        let path = dir.join(format!("{name}.{section}"));
        std::fs::write(&path, page)?;
        println!("{}", path.display());
    }
    // upcased.toml(5), from the config module's key declarations.
    let path = dir.join("upcased.toml.5");
    std::fs::write(&path, upcase::config::man_page())?;
    println!("{}", path.display());
    Ok(())
}
