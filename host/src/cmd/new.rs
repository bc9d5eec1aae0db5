//! `eventhost plugin new NAME --lang rust|python|js`: a plugin that builds and whose
//! fixtures pass as it is, with the four steps (new, build, test, ship) beside it, and for
//! Python and JavaScript the contract's WIT (a Rust plugin gets it from the kit; a `wit/`
//! beside it would make `cargo component` look for a world of its own). The templates
//! are compiled into the binary (`host/templates/`).

use anyhow::{bail, Context};
use eventhost::PluginName;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

const WIT: [(&str, &str); 3] = [
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    ("wit/imports.wit", include_str!("../../../wit/imports.wit")),
    ("wit/exports.wit", include_str!("../../../wit/exports.wit")),
];

const FIXTURES: [(&str, &str); 3] = [
    (
        "fixtures/01_first_event.json",
        include_str!("../../templates/fixtures/01_first_event.json"),
    ),
    (
        "fixtures/02_same_event_again.json",
        include_str!("../../templates/fixtures/02_same_event_again.json"),
    ),
    (
        "fixtures/03_read_subject.json",
        include_str!("../../templates/fixtures/03_read_subject.json"),
    ),
];

/// Where the kit is when this binary runs from the eventhost checkout it was built in.
const KIT_BESIDE_THE_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../kit");

pub fn run(
    name: &str,
    lang: Lang,
    dir: Option<PathBuf>,
    kit: Option<PathBuf>,
) -> anyhow::Result<()> {
    let name = PluginName::parse(name).map_err(anyhow::Error::msg)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name.as_str()));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    // `my-plugin` builds as `my_plugin.wasm`, which loads as plugin `my-plugin`.
    let file = name.as_str().replace('-', "_");
    let fill = |template: &str, kit: &str| {
        template
            .replace("{{name}}", name.as_str())
            .replace("{{file}}", &file)
            .replace("{{kit}}", kit)
    };
    let mut files: Vec<(String, String)> = Vec::new();
    let (build, wasm) = match lang {
        Lang::Rust => {
            let kit = kit_path(kit)?;
            let kit = kit.to_str().context("the kit's path is not UTF-8")?;
            // A TOML string, quoted and escaped whatever the path holds.
            let kit = toml::Value::String(kit.to_string()).to_string();
            let kit = kit.as_str();
            files.push((
                "Cargo.toml".into(),
                fill(include_str!("../../templates/rust/Cargo.toml"), kit),
            ));
            files.push((
                "src/lib.rs".into(),
                fill(include_str!("../../templates/rust/src/lib.rs"), kit),
            ));
            (
                "cargo build --target wasm32-wasip2 --release".to_string(),
                format!("target/wasm32-wasip2/release/{file}.wasm"),
            )
        }
        Lang::Python => {
            files.push((
                "app.py".into(),
                fill(include_str!("../../templates/python/app.py"), ""),
            ));
            (
                format!("componentize-py -d wit -w plugin componentize app -o {file}.wasm"),
                format!("{file}.wasm"),
            )
        }
        Lang::Js => {
            files.push((
                format!("{file}.js"),
                fill(include_str!("../../templates/js/plugin.js"), ""),
            ));
            (
                format!(
                    "componentize-js --wit wit --world-name plugin --out {file}.wasm {file}.js"
                ),
                format!("{file}.wasm"),
            )
        }
    };
    let wit: &[(&str, &str)] = if lang == Lang::Rust { &[] } else { &WIT };
    for (path, text) in wit.iter().chain(FIXTURES.iter()) {
        files.push((path.to_string(), text.to_string()));
    }
    files.push(("README.md".into(), steps(&name, &build, &wasm, &file)));
    for (path, text) in &files {
        write(&dir.join(path), text)?;
    }
    println!("created plugin {name} ({lang:?}) in {}", dir.display());
    println!(
        "next: cd {} && {build} && eventhost plugin test {wasm} fixtures",
        dir.display()
    );
    Ok(())
}

fn kit_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = given.unwrap_or_else(|| PathBuf::from(KIT_BESIDE_THE_BUILD));
    let found = path.join("Cargo.toml").is_file();
    if !found {
        bail!(
            "the eventhost-plugin kit is not at {}: pass --kit <eventhost checkout>/kit",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The plugin's own README: the four steps, with this plugin's commands.
fn steps(name: &PluginName, build: &str, wasm: &str, file: &str) -> String {
    format!(
        "# {name}\n\n\
         An eventhost plugin of the contract `eventhost:plugin@0.1.0`.\n\n\
         1. **Build**: `{build}`\n\
         2. **Test** the fixtures in `fixtures/` against a throwaway database:\n   \
            `eventhost plugin test {wasm} fixtures`\n\
         3. **Ship**: copy the component into the host's plugin directory under a temporary\n   \
            name, then rename it, so the host never reads half a file:\n   \
            `cp {wasm} $PLUGIN_DIR/.{file}.wasm.part && mv $PLUGIN_DIR/.{file}.wasm.part $PLUGIN_DIR/{file}.wasm`\n"
    )
}
