//! A Dockerfile parser: instructions with their 1-based start line and column, line continuations
//! (with the `# escape=` parser directive), comments, exec (JSON) and shell forms, flags such as
//! `--from=` and `--platform=`, heredocs, build stages and `# keelson:allow` suppression comments.
//!
//! Invariants: parsing never panics, whatever the text; every error names a line and column; the
//! parse collects every error in the file rather than stopping at the first. ARG values are only
//! substituted where a rule asks for it ([`Dockerfile::expand_global_args`]).

use std::fmt;
use std::ops::Range;

/// A Dockerfile instruction keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
}

impl Keyword {
    /// Every keyword, for lookups and "did you mean" hints.
    pub const ALL: [Keyword; 18] = [
        Keyword::Add,
        Keyword::Arg,
        Keyword::Cmd,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Env,
        Keyword::Expose,
        Keyword::From,
        Keyword::Healthcheck,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Onbuild,
        Keyword::Run,
        Keyword::Shell,
        Keyword::Stopsignal,
        Keyword::User,
        Keyword::Volume,
        Keyword::Workdir,
    ];

    /// The keyword as written in upper case, e.g. `ENTRYPOINT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Add => "ADD",
            Keyword::Arg => "ARG",
            Keyword::Cmd => "CMD",
            Keyword::Copy => "COPY",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Env => "ENV",
            Keyword::Expose => "EXPOSE",
            Keyword::From => "FROM",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Label => "LABEL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Run => "RUN",
            Keyword::Shell => "SHELL",
            Keyword::Stopsignal => "STOPSIGNAL",
            Keyword::User => "USER",
            Keyword::Volume => "VOLUME",
            Keyword::Workdir => "WORKDIR",
        }
    }

    /// Case-insensitive lookup.
    pub fn parse(word: &str) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|keyword| keyword.as_str().eq_ignore_ascii_case(word))
    }

    /// Instructions whose arguments may be a JSON array (exec form).
    fn accepts_exec_form(self) -> bool {
        matches!(
            self,
            Keyword::Run
                | Keyword::Cmd
                | Keyword::Entrypoint
                | Keyword::Shell
                | Keyword::Copy
                | Keyword::Add
                | Keyword::Volume
        )
    }

    /// Instructions that take `--name[=value]` flags before their arguments.
    fn takes_flags(self) -> bool {
        matches!(
            self,
            Keyword::From | Keyword::Run | Keyword::Copy | Keyword::Add | Keyword::Healthcheck
        )
    }

    /// Instructions that may carry heredocs (`<<EOF`).
    fn takes_heredocs(self) -> bool {
        matches!(self, Keyword::Run | Keyword::Copy | Keyword::Add)
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--name=value` (or bare `--name`) flag of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

/// An instruction's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arguments {
    /// `["executable", "arg"]`: the JSON array, decoded.
    Exec(Vec<String>),
    /// Everything after the keyword and flags, continuations joined, leading blanks trimmed.
    Shell(String),
}

/// A heredoc body attached to an instruction (`RUN <<EOF … EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, without quotes.
    pub delimiter: String,
    /// The lines between the instruction and the delimiter, joined with `\n`.
    pub body: String,
}

/// Which rules a `# keelson:allow` comment directly above an instruction suppresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    /// `# keelson:allow` without ids: every rule.
    pub all: bool,
    /// Rule ids listed after `keelson:allow` (Keelson or upstream ids, compared case-insensitively).
    pub ids: Vec<String>,
}

impl Allow {
    /// Whether a rule with this Keelson id (or upstream id) is suppressed.
    pub fn allows(&self, id: &str, upstream_id: Option<&str>) -> bool {
        self.all
            || self.ids.iter().any(|allowed| {
                allowed.eq_ignore_ascii_case(id)
                    || upstream_id.is_some_and(|upstream| allowed.eq_ignore_ascii_case(upstream))
            })
    }

    fn merge(&mut self, other: Allow) {
        self.all |= other.all;
        self.ids.extend(other.ids);
    }

    /// Parses a comment's text (after `#`); `None` when it is not a suppression comment.
    pub fn from_comment(comment: &str) -> Option<Allow> {
        let rest = comment.trim().strip_prefix("keelson:allow")?;
        if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let ids: Vec<String> = rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Allow {
            all: ids.is_empty(),
            ids,
        })
    }
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: Keyword,
    /// 1-based line of the keyword.
    pub line: usize,
    /// 1-based column (in characters) of the keyword.
    pub column: usize,
    /// 1-based last line, continuations and heredocs included.
    pub end_line: usize,
    pub flags: Vec<Flag>,
    pub arguments: Arguments,
    pub heredocs: Vec<Heredoc>,
    /// The trigger instruction of an `ONBUILD`.
    pub trigger: Option<Box<Instruction>>,
    /// The index of the stage (FROM) the instruction belongs to; `None` for ARGs before the first FROM.
    pub stage: Option<usize>,
    /// Suppressions from comments directly above.
    pub allow: Allow,
}

impl Instruction {
    /// The value of a flag, e.g. `flag("from")` for `COPY --from=build`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|flag| flag.name.eq_ignore_ascii_case(name))
            .and_then(|flag| flag.value.as_deref())
    }

    /// The arguments as words: the exec-form array, or the shell form split on blanks with quotes
    /// removed.
    pub fn words(&self) -> Vec<String> {
        match &self.arguments {
            Arguments::Exec(words) => words.clone(),
            Arguments::Shell(text) => split_words(text),
        }
    }

    /// The instruction normalised to one line (`KEYWORD flags arguments`), blanks collapsed: a
    /// stable description that does not depend on line breaks or indentation.
    pub fn normalized(&self) -> String {
        let mut out = self.keyword.as_str().to_owned();
        for flag in &self.flags {
            out.push_str(" --");
            out.push_str(&flag.name);
            if let Some(value) = &flag.value {
                out.push('=');
                out.push_str(value);
            }
        }
        match &self.arguments {
            Arguments::Exec(words) => {
                out.push(' ');
                out.push_str(&serde_json::to_string(words).unwrap_or_default());
            }
            Arguments::Shell(text) => {
                for word in text.split_whitespace() {
                    out.push(' ');
                    out.push_str(word);
                }
            }
        }
        out
    }

    /// The shell script a `RUN` (or `HEALTHCHECK CMD`, `CMD`, `ENTRYPOINT`) executes, as far as it can
    /// be known: the shell-form text, a heredoc body fed to a shell, the `-c` argument of an exec
    /// form that starts a shell, or the exec-form words joined by spaces.
    pub fn script(&self) -> String {
        match &self.arguments {
            Arguments::Exec(words) => {
                let is_shell = words
                    .first()
                    .is_some_and(|program| is_shell_program(program));
                if is_shell
                    && let Some(position) = words.iter().position(|word| word == "-c")
                    && let Some(script) = words.get(position + 1)
                {
                    return script.clone();
                }
                words.join(" ")
            }
            Arguments::Shell(text) => {
                if self.heredocs.is_empty() {
                    return text.clone();
                }
                let without_markers = strip_heredoc_markers(text);
                let command = without_markers.trim();
                let words = split_words(command);
                let body: Vec<&str> = self.heredocs.iter().map(|h| h.body.as_str()).collect();
                if words.is_empty()
                    || (is_shell_program(&words[0])
                        && words[1..].iter().all(|word| word.starts_with('-')))
                {
                    // `RUN <<EOF` or `RUN bash <<EOF`: the body is the script.
                    body.join("\n")
                } else {
                    // `RUN python3 <<EOF`: the body is data for another program.
                    command.to_owned()
                }
            }
        }
    }
}

fn is_shell_program(program: &str) -> bool {
    let name = program.rsplit('/').next().unwrap_or(program);
    matches!(name, "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh")
}

/// An image reference as written after FROM: `name[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference exactly as written.
    pub raw: String,
    /// Registry, repository and name, without tag or digest.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Splits a reference; the tag is the part after the last `:` that follows the last `/` (so a
    /// registry port is not mistaken for a tag).
    pub fn parse(raw: &str) -> ImageRef {
        let (without_digest, digest) = match raw.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_owned())),
            None => (raw, None),
        };
        let last_slash = without_digest.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match without_digest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (
                    without_digest[..colon].to_owned(),
                    Some(without_digest[colon + 1..].to_owned()),
                )
            }
            None => (without_digest.to_owned(), None),
        };
        ImageRef {
            raw: raw.to_owned(),
            name,
            tag,
            digest,
        }
    }
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 0-based position among the stages.
    pub index: usize,
    /// The index of the FROM in [`Dockerfile::instructions`].
    pub from: usize,
    pub image: ImageRef,
    /// The `AS name`, as written.
    pub alias: Option<String>,
    pub platform: Option<String>,
    /// The stage's instructions in [`Dockerfile::instructions`], its FROM included.
    pub instructions: Range<usize>,
}

impl Stage {
    /// `stage 1 (build)` or `stage 0`.
    pub fn describe(&self) -> String {
        match &self.alias {
            Some(alias) => format!("stage {} ({alias})", self.index),
            None => format!("stage {}", self.index),
        }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` unless a `# escape=` directive says otherwise).
    pub escape: char,
    /// Every instruction in file order.
    pub instructions: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The instructions of one stage (FROM included).
    pub fn stage_instructions(&self, stage: &Stage) -> &[Instruction] {
        self.instructions
            .get(stage.instructions.clone())
            .unwrap_or(&[])
    }

    /// The stage whose alias is `name` (case-insensitive), declared before stage `before`.
    pub fn stage_named(&self, name: &str, before: usize) -> Option<&Stage> {
        self.stages[..before.min(self.stages.len())]
            .iter()
            .rev()
            .find(|stage| {
                stage
                    .alias
                    .as_deref()
                    .is_some_and(|alias| alias.eq_ignore_ascii_case(name))
            })
    }

    /// Substitutes `$NAME` / `${NAME}` with the defaults of the ARGs declared before the first
    /// FROM (the only ARGs a FROM line can see). Unknown variables are left as written.
    pub fn expand_global_args(&self, text: &str) -> String {
        let mut defaults: Vec<(String, String)> = Vec::new();
        for instruction in self.instructions.iter().take_while(|i| i.stage.is_none()) {
            for word in instruction.words() {
                if let Some((name, value)) = word.split_once('=') {
                    defaults.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, consumed, default) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(close) => {
                        let inner = &braced[..close];
                        let (name, default) = match inner.split_once(":-") {
                            Some((name, default)) => (name, Some(default)),
                            None => (inner, None),
                        };
                        (name, close + 2, default)
                    }
                    None => ("", 0, None),
                }
            } else {
                let length = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..length], length, None)
            };
            let value = defaults
                .iter()
                .rev()
                .find(|(arg, _)| arg == name)
                .map(|(_, value)| value.as_str())
                .or(default);
            match (name.is_empty(), value) {
                (false, Some(value)) => out.push_str(value),
                _ => out.push_str(&rest[dollar..dollar + 1 + consumed]),
            }
            rest = &after[consumed..];
        }
        out.push_str(rest);
        out
    }
}

/// A parse error at a line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Parses a Dockerfile. On failure returns every error found, in file order.
pub fn parse(text: &str) -> Result<Dockerfile, Vec<ParseError>> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    let mut errors = Vec::new();
    let mut index = 0;
    let escape = read_directives(&lines, &mut index, &mut errors);

    let mut instructions: Vec<Instruction> = Vec::new();
    let mut pending_allow = Allow::default();
    while index < lines.len() {
        let line = lines[index];
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            pending_allow = Allow::default();
            index += 1;
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(allow) = Allow::from_comment(comment) {
                pending_allow.merge(allow);
            }
            index += 1;
            continue;
        }
        let start_line = index + 1;
        let column = line.chars().count() - trimmed.chars().count() + 1;
        let logical = join_continuations(&lines, &mut index, escape);
        let logical = logical.trim_start().to_owned();
        match parse_instruction(&logical, start_line, column) {
            Ok(mut instruction) => {
                if instruction.keyword.takes_heredocs() {
                    let markers = heredoc_markers(&shell_text(&instruction.arguments));
                    for (delimiter, strip_tabs) in markers {
                        match read_heredoc(&lines, &mut index, &delimiter, strip_tabs) {
                            Some(body) => instruction.heredocs.push(Heredoc { delimiter, body }),
                            None => {
                                errors.push(ParseError {
                                    line: start_line,
                                    column,
                                    message: format!(
                                        "heredoc `<<{delimiter}` is never closed: add a line `{delimiter}` after its body"
                                    ),
                                });
                                break;
                            }
                        }
                    }
                }
                instruction.end_line = index.max(start_line);
                instruction.allow = std::mem::take(&mut pending_allow);
                instructions.push(instruction);
            }
            Err(error) => {
                pending_allow = Allow::default();
                errors.push(error);
            }
        }
    }

    let stages = assign_stages(&mut instructions, &mut errors);
    if stages.is_empty() && errors.is_empty() {
        let (line, column) = instructions
            .first()
            .map_or((1, 1), |first| (first.line, first.column));
        errors.push(ParseError {
            line,
            column,
            message: "no FROM instruction: a Dockerfile must start a build stage with FROM"
                .to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(Dockerfile {
            escape,
            instructions,
            stages,
        })
    } else {
        errors.sort_by_key(|error| (error.line, error.column));
        Err(errors)
    }
}

/// Reads the parser directives at the top of the file (`# escape=`, `# syntax=`, `# check=`) and
/// returns the escape character.
fn read_directives(lines: &[&str], index: &mut usize, errors: &mut Vec<ParseError>) -> char {
    let mut escape = '\\';
    while let Some(line) = lines.get(*index) {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            break;
        }
        if key == "escape" {
            match value.trim() {
                "\\" => escape = '\\',
                "`" => escape = '`',
                other => errors.push(ParseError {
                    line: *index + 1,
                    column: line.find('#').unwrap_or(0) + 1,
                    message: format!(
                        "invalid escape directive `{other}`: the escape character must be `\\` or a backtick"
                    ),
                }),
            }
        }
        *index += 1;
    }
    escape
}

/// Joins a logical line starting at `lines[*index]`: a line ending in the escape character (blanks
/// after it allowed) continues on the next line; comment and blank lines inside a continuation are
/// dropped. Leaves `*index` after the last line consumed.
fn join_continuations(lines: &[&str], index: &mut usize, escape: char) -> String {
    let mut logical = String::new();
    let mut current = lines[*index];
    *index += 1;
    loop {
        let without_trailing = current.trim_end();
        match without_trailing.strip_suffix(escape) {
            Some(continued) => {
                logical.push_str(continued);
                // Skip comment and empty lines inside the continuation.
                while let Some(next) = lines.get(*index) {
                    let next_trimmed = next.trim_start();
                    if next_trimmed.is_empty() || next_trimmed.starts_with('#') {
                        *index += 1;
                    } else {
                        break;
                    }
                }
                match lines.get(*index) {
                    Some(next) => {
                        current = next;
                        *index += 1;
                    }
                    None => return logical,
                }
            }
            None => {
                logical.push_str(current);
                return logical;
            }
        }
    }
}

/// The heredoc markers of an instruction's text, in order: (delimiter, `<<-` strips tabs).
fn heredoc_markers(text: &str) -> Vec<(String, bool)> {
    let mut markers = Vec::new();
    let mut rest = text;
    while let Some(position) = rest.find("<<") {
        let mut after = &rest[position + 2..];
        let strip_tabs = after.starts_with('-');
        if strip_tabs {
            after = &after[1..];
        }
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        if let Some(quote) = quote {
            after = &after[1..];
            let end = after.find(quote).unwrap_or(after.len());
            let word = &after[..end];
            if !word.is_empty() {
                markers.push((word.to_owned(), strip_tabs));
            }
            rest = &after[end..];
            continue;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(after.len());
        let word = &after[..end];
        if !word.is_empty() && !word.chars().all(|c| c.is_ascii_digit()) {
            markers.push((word.to_owned(), strip_tabs));
        }
        rest = &after[end..];
    }
    markers
}

fn strip_heredoc_markers(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if word.starts_with("<<") {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Reads a heredoc body up to its delimiter line; `None` if the file ends first.
fn read_heredoc(
    lines: &[&str],
    index: &mut usize,
    delimiter: &str,
    strip_tabs: bool,
) -> Option<String> {
    let mut body: Vec<&str> = Vec::new();
    while let Some(line) = lines.get(*index) {
        *index += 1;
        let candidate = if strip_tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if candidate.trim_end() == delimiter {
            return Some(body.join("\n"));
        }
        body.push(candidate);
    }
    None
}

fn shell_text(arguments: &Arguments) -> String {
    match arguments {
        Arguments::Shell(text) => text.clone(),
        Arguments::Exec(_) => String::new(),
    }
}

/// Parses one logical line (continuations already joined) into an instruction.
fn parse_instruction(logical: &str, line: usize, column: usize) -> Result<Instruction, ParseError> {
    let error = |offset: usize, message: String| ParseError {
        line,
        column: column + offset,
        message,
    };
    let word_end = logical.find(char::is_whitespace).unwrap_or(logical.len());
    let word = &logical[..word_end];
    let Some(keyword) = Keyword::parse(word) else {
        let hint = closest_keyword(word)
            .map(|keyword| format!(", did you mean `{keyword}`?"))
            .unwrap_or_else(|| ": expected an instruction such as FROM, RUN or COPY".to_owned());
        return Err(error(0, format!("unknown instruction `{word}`{hint}")));
    };
    let mut rest = logical[word_end..].trim_start();
    let mut offset = logical.chars().count() - rest.chars().count();

    let mut flags = Vec::new();
    if keyword.takes_flags() {
        while let Some(flag_text) = rest.strip_prefix("--") {
            let end = flag_text
                .find(char::is_whitespace)
                .unwrap_or(flag_text.len());
            let token = &flag_text[..end];
            let (name, value) = match token.split_once('=') {
                Some((name, value)) => (name, Some(unquote(value))),
                None => (token, None),
            };
            if name.is_empty() {
                return Err(error(offset, format!("empty flag name in `{keyword}`")));
            }
            flags.push(Flag {
                name: name.to_owned(),
                value,
            });
            let after = flag_text[end..].trim_start();
            offset += rest.chars().count() - after.chars().count();
            rest = after;
        }
    }

    let mut trigger = None;
    let arguments = match keyword {
        Keyword::Onbuild => {
            if rest.is_empty() {
                return Err(error(
                    0,
                    "`ONBUILD` needs an instruction to run later".to_owned(),
                ));
            }
            let inner = parse_instruction(rest, line, column + offset)?;
            if matches!(
                inner.keyword,
                Keyword::Onbuild | Keyword::From | Keyword::Maintainer
            ) {
                return Err(error(
                    offset,
                    format!("`ONBUILD {}` is not allowed", inner.keyword),
                ));
            }
            trigger = Some(Box::new(inner));
            Arguments::Shell(rest.to_owned())
        }
        Keyword::Healthcheck => {
            let first_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let first = &rest[..first_end];
            if first.eq_ignore_ascii_case("NONE") {
                Arguments::Shell("NONE".to_owned())
            } else if first.eq_ignore_ascii_case("CMD") {
                let command = rest[first_end..].trim_start();
                let command_offset = offset + rest.chars().count() - command.chars().count();
                if command.is_empty() {
                    return Err(error(0, "`HEALTHCHECK CMD` needs a command".to_owned()));
                }
                parse_arguments(command, true).map_err(|message| error(command_offset, message))?
            } else {
                return Err(error(
                    offset,
                    "`HEALTHCHECK` expects `CMD <command>` or `NONE`".to_owned(),
                ));
            }
        }
        _ => {
            if rest.is_empty() {
                return Err(error(0, format!("`{keyword}` needs arguments")));
            }
            let arguments = parse_arguments(rest, keyword.accepts_exec_form())
                .map_err(|message| error(offset, message))?;
            if keyword == Keyword::Shell && !matches!(arguments, Arguments::Exec(_)) {
                return Err(error(
                    offset,
                    "`SHELL` takes a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]".to_owned(),
                ));
            }
            arguments
        }
    };
    let instruction = Instruction {
        keyword,
        line,
        column,
        end_line: line,
        flags,
        arguments,
        heredocs: Vec::new(),
        trigger,
        stage: None,
        allow: Allow::default(),
    };
    if keyword == Keyword::From {
        check_from(&instruction).map_err(|message| error(offset, message))?;
    }
    Ok(instruction)
}

/// Exec form when the text is a JSON array of strings; an error when it starts like one
/// (`["`) but is not valid JSON; otherwise shell form (`RUN [ -f x ] && …` is a shell test).
fn parse_arguments(text: &str, accepts_exec_form: bool) -> Result<Arguments, String> {
    let trimmed = text.trim_end();
    if accepts_exec_form && trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(trimmed) {
            Ok(words) => return Ok(Arguments::Exec(words)),
            Err(json_error) => {
                let looks_like_json = trimmed[1..].trim_start().starts_with('"')
                    || trimmed[1..].trim_start().is_empty()
                    || trimmed == "[]";
                if looks_like_json {
                    return Err(format!(
                        "invalid JSON array (exec form): {json_error}; write [\"program\", \"arg\"] with double quotes and a closing `]`, or drop the brackets for shell form"
                    ));
                }
            }
        }
    }
    Ok(Arguments::Shell(trimmed.to_owned()))
}

fn check_from(instruction: &Instruction) -> Result<(), String> {
    let words = instruction.words();
    match words.as_slice() {
        [_image] => Ok(()),
        [_image, as_word, _name] if as_word.eq_ignore_ascii_case("as") => Ok(()),
        _ => Err("expected `FROM [--platform=<platform>] <image> [AS <name>]`".to_owned()),
    }
}

/// Numbers the stages, records each instruction's stage, and reports instructions before the
/// first FROM other than ARG.
fn assign_stages(instructions: &mut [Instruction], errors: &mut Vec<ParseError>) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let total = instructions.len();
    for (position, instruction) in instructions.iter_mut().enumerate() {
        if instruction.keyword == Keyword::From {
            if let Some(previous) = stages.last_mut() {
                previous.instructions.end = position;
            }
            let words = instruction.words();
            let image = words.first().cloned().unwrap_or_default();
            stages.push(Stage {
                index: stages.len(),
                from: position,
                image: ImageRef::parse(&image),
                alias: words.get(2).cloned(),
                platform: instruction.flag("platform").map(str::to_owned),
                instructions: position..total,
            });
        } else if stages.is_empty() && instruction.keyword != Keyword::Arg {
            errors.push(ParseError {
                line: instruction.line,
                column: instruction.column,
                message: format!(
                    "`{}` before the first FROM: only ARG may come before FROM",
                    instruction.keyword
                ),
            });
        }
        instruction.stage = stages.last().map(|stage| stage.index);
    }
    stages
}

fn closest_keyword(word: &str) -> Option<Keyword> {
    let upper = word.to_ascii_uppercase();
    Keyword::ALL
        .into_iter()
        .map(|keyword| (edit_distance(&upper, keyword.as_str()), keyword))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, keyword)| keyword)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn unquote(value: &str) -> String {
    let bytes = value.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        value[1..value.len() - 1].to_owned()
    } else {
        value.to_owned()
    }
}

/// Splits shell-form arguments into words on blanks, honouring single and double quotes (which
/// are removed) and backslash escapes.
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(next @ ('"' | '\\' | '$' | '`')) => current.push(next),
                Some(next) => {
                    current.push('\\');
                    current.push(next);
                }
                None => current.push('\\'),
            },
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Dockerfile {
        match parse(text) {
            Ok(file) => file,
            Err(errors) => panic!("unexpected errors: {errors:?}"),
        }
    }

    fn first_error(text: &str) -> ParseError {
        match parse(text) {
            Ok(file) => panic!("expected an error, parsed {file:?}"),
            Err(errors) => errors[0].clone(),
        }
    }

    #[test]
    fn instructions_carry_line_and_column() {
        let file = parse_ok("# comment\nFROM alpine:3.19 AS base\n\n  RUN echo hi\nUSER app\n");
        let positions: Vec<(Keyword, usize, usize)> = file
            .instructions
            .iter()
            .map(|i| (i.keyword, i.line, i.column))
            .collect();
        assert_eq!(
            positions,
            vec![
                (Keyword::From, 2, 1),
                (Keyword::Run, 4, 3),
                (Keyword::User, 5, 1)
            ]
        );
        assert_eq!(file.stages[0].alias.as_deref(), Some("base"));
        assert_eq!(file.stages[0].image.tag.as_deref(), Some("3.19"));
    }

    #[test]
    fn continuations_join_and_skip_comments() {
        let file = parse_ok(
            "FROM a:1\nRUN apt-get update \\\n  # a comment\n\n  && apt-get install -y x\nUSER u\n",
        );
        let run = &file.instructions[1];
        assert_eq!(run.line, 2);
        assert_eq!(run.end_line, 5);
        assert_eq!(
            run.arguments,
            Arguments::Shell("apt-get update   && apt-get install -y x".to_owned())
        );
        assert_eq!(file.instructions[2].line, 6);
    }

    #[test]
    fn escape_directive_switches_to_backtick() {
        let file = parse_ok(
            "# escape=`\nFROM mcr.microsoft.com/windows:ltsc2022\nRUN dir `\n  C:\\\nWORKDIR C:\\app\n",
        );
        assert_eq!(file.escape, '`');
        assert_eq!(
            file.instructions[1].arguments,
            Arguments::Shell("dir   C:\\".to_owned())
        );
        assert_eq!(file.instructions[2].line, 5);
    }

    #[test]
    fn exec_and_shell_forms() {
        let file =
            parse_ok("FROM a:1\nCMD [\"run\", \"--port\", \"80\"]\nRUN [ -f /x ] || touch /x\n");
        assert_eq!(
            file.instructions[1].arguments,
            Arguments::Exec(vec!["run".into(), "--port".into(), "80".into()])
        );
        assert!(matches!(
            file.instructions[2].arguments,
            Arguments::Shell(_)
        ));
    }

    #[test]
    fn from_with_platform_digest_and_registry_port() {
        let file = parse_ok(
            "FROM --platform=linux/amd64 registry:5000/team/app@sha256:abc AS build\nFROM build\n",
        );
        let stage = &file.stages[0];
        assert_eq!(stage.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(stage.image.name, "registry:5000/team/app");
        assert_eq!(stage.image.tag, None);
        assert_eq!(stage.image.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(file.stages[1].instructions, 1..2);
    }

    #[test]
    fn copy_flags() {
        let file = parse_ok("FROM a:1\nCOPY --from=build --chown=app:app /out /app\n");
        let copy = &file.instructions[1];
        assert_eq!(copy.flag("from"), Some("build"));
        assert_eq!(copy.flag("chown"), Some("app:app"));
        assert_eq!(copy.words(), vec!["/out", "/app"]);
    }

    #[test]
    fn heredocs_are_bodies_not_instructions() {
        let file = parse_ok(
            "FROM a:1\nRUN <<EOF\napt-get update\nFROM is not an instruction here\nEOF\nCOPY <<-'END' /etc/conf\n\tkey=value\n\tEND\nUSER app\n",
        );
        assert_eq!(file.instructions.len(), 4);
        let run = &file.instructions[1];
        assert_eq!(run.heredocs[0].delimiter, "EOF");
        assert_eq!(
            run.script(),
            "apt-get update\nFROM is not an instruction here"
        );
        assert_eq!(run.end_line, 5);
        assert_eq!(file.instructions[2].heredocs[0].body, "key=value");
        assert_eq!(file.instructions[3].line, 9);
    }

    #[test]
    fn errors_name_line_and_column() {
        let error = first_error("FROM a:1\n  CMD [\"a\", \"b\"\n");
        assert_eq!((error.line, error.column), (2, 7));
        assert!(error.message.contains("invalid JSON array"), "{error}");

        let error = first_error("RUN echo\nFROM a:1\n");
        assert_eq!((error.line, error.column), (1, 1));
        assert!(error.message.contains("before the first FROM"), "{error}");

        let error = first_error("FROM a:1\nRUNN echo\n");
        assert_eq!((error.line, error.column), (2, 1));
        assert!(error.message.contains("did you mean `RUN`"), "{error}");

        let error = first_error("FROM a:1\nRUN <<EOF\necho\n");
        assert!(error.message.contains("never closed"), "{error}");

        let error = first_error("# just a comment\n");
        assert!(error.message.contains("no FROM"), "{error}");
    }

    #[test]
    fn every_error_is_reported() {
        let errors = parse("FROM a:1\nFOO x\nBAR y\nCMD [\"x\"\n").unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
    }

    #[test]
    fn allow_comments_attach_to_the_next_instruction() {
        let file = parse_ok(
            "FROM a\n# keelson:allow KDF-002, KDF-001\n# other text\nUSER root\n# keelson:allow\n\nCMD x\n",
        );
        assert_eq!(file.instructions[1].allow.ids, vec!["KDF-002", "KDF-001"]);
        assert_eq!(file.instructions[2].allow, Allow::default());
        assert!(Allow::from_comment(" keelson:allowed").is_none());
    }

    #[test]
    fn global_args_expand_in_from() {
        let file = parse_ok("ARG TAG=3.19\nARG OTHER\nFROM alpine:${TAG}\n");
        assert_eq!(file.expand_global_args("alpine:${TAG}"), "alpine:3.19");
        assert_eq!(file.expand_global_args("x:$OTHER"), "x:$OTHER");
        assert_eq!(file.expand_global_args("x:${NOPE:-1}"), "x:1");
    }

    #[test]
    fn onbuild_parses_its_trigger() {
        let file = parse_ok("FROM a:1\nONBUILD COPY . /src\n");
        let trigger = file.instructions[1].trigger.as_deref().unwrap();
        assert_eq!(trigger.keyword, Keyword::Copy);
        assert!(parse("FROM a:1\nONBUILD FROM b\n").is_err());
    }
}
