//! `Gemfile.lock` (Bundler): gems listed under `specs:` of the GEM, GIT, PATH and PLUGIN SOURCE
//! sections, with their dependency names.

use super::{Ctx, LockfileError, Parsed, RUBYGEMS, package};

const SOURCE_SECTIONS: [&str; 4] = ["GEM", "GIT", "PATH", "PLUGIN SOURCE"];

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let mut parsed = Parsed::default();
    let mut in_source_section = false;
    let mut in_specs = false;
    let mut saw_section = false;
    for (index, raw) in ctx.text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start();
        match indent {
            0 => {
                if !content
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '_')
                {
                    return Err(ctx.error_at_line(
                        line_number,
                        format!("expected a section header such as GEM, found `{content}`"),
                    ));
                }
                saw_section = true;
                in_source_section = SOURCE_SECTIONS.contains(&content);
                in_specs = false;
            }
            2 if in_source_section => in_specs = content == "specs:",
            4 if in_specs => {
                let (name, version) = name_and_version(content).ok_or_else(|| {
                    ctx.error_at_line(
                        line_number,
                        format!("expected `name (version)`, found `{content}`"),
                    )
                })?;
                // Platform-specific gems: "nokogiri (1.13.3-x86_64-linux)".
                let version = version.split('-').next().unwrap_or(version);
                parsed.packages.push(package(RUBYGEMS, name, version));
            }
            6 if in_specs => {
                if let Some(gem) = parsed.packages.last_mut() {
                    let dependency = content.split_whitespace().next().unwrap_or(content);
                    gem.dependencies.push(dependency.to_owned());
                }
            }
            _ => {}
        }
    }
    if !saw_section && !ctx.text.trim().is_empty() {
        return Err(ctx.error("no Gemfile.lock sections (GEM, DEPENDENCIES, ...) found"));
    }
    Ok(parsed)
}

fn name_and_version(spec: &str) -> Option<(&str, &str)> {
    let (name, rest) = spec.split_once(" (")?;
    let version = rest.strip_suffix(')')?;
    (!name.is_empty() && !version.is_empty() && !name.contains(' ')).then_some((name, version))
}
