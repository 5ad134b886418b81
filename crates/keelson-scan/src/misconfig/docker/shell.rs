//! A small shell-script reader for RUN instructions: splits a script into simple commands (on
//! `&&`, `||`, `;`, `|`, `&`, newlines, parentheses and braces) and each command into words, with
//! quotes, escapes, comments, `$(…)` and redirections handled well enough for lint rules.
//!
//! Invariant: never panics and never executes anything; it is a reader, not a shell.

/// One simple command: its words with quotes removed, redirections dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<String>,
}

impl Command {
    /// The words after leading `NAME=value` assignments and shell keywords (`if`, `then`, `!` …).
    pub fn invoked(&self) -> &[String] {
        let mut rest = self.words.as_slice();
        while let Some(first) = rest.first() {
            let keyword = matches!(
                first.as_str(),
                "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!" | "time"
            );
            if keyword || is_assignment(first) {
                rest = &rest[1..];
            } else {
                break;
            }
        }
        rest
    }

    /// Like [`Command::invoked`], and also past wrappers that run another command (`sudo`, `env`,
    /// `exec`, `command`, `nice`, `nohup`) and their options.
    pub fn effective(&self) -> &[String] {
        let mut rest = self.invoked();
        loop {
            let Some(first) = rest.first() else {
                return rest;
            };
            let program = program_name(first);
            if !matches!(
                program,
                "sudo" | "env" | "exec" | "command" | "nice" | "nohup"
            ) {
                return rest;
            }
            rest = &rest[1..];
            while let Some(next) = rest.first() {
                if next.starts_with('-') || is_assignment(next) {
                    // `sudo -u user cmd`: skip the option's value too.
                    let takes_value = program == "sudo"
                        && matches!(next.as_str(), "-u" | "-g" | "-C" | "-h" | "-p" | "-U");
                    rest = &rest[1..];
                    if takes_value && !rest.is_empty() {
                        rest = &rest[1..];
                    }
                } else {
                    break;
                }
            }
        }
    }

    /// The program name (last path component) of [`Command::effective`].
    pub fn program(&self) -> Option<&str> {
        self.effective().first().map(|word| program_name(word))
    }

    /// The first word after the program that is not an option (`apt-get -y install x` →
    /// `install`). Options listed in `options_with_value` consume the next word.
    pub fn subcommand(&self, options_with_value: &[&str]) -> Option<&str> {
        let mut words = self.effective().iter().skip(1);
        while let Some(word) = words.next() {
            if word.starts_with('-') {
                if options_with_value.contains(&word.as_str()) {
                    words.next();
                }
                continue;
            }
            return Some(word);
        }
        None
    }

    /// The words after the program.
    pub fn arguments(&self) -> &[String] {
        let effective = self.effective();
        effective.get(1..).unwrap_or(&[])
    }
}

/// The last path component: `/usr/bin/apt-get` → `apt-get`.
pub fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Splits a script into simple commands. Empty commands and the words `{`, `}`, `fi`, `done`,
/// `esac` are dropped.
pub fn commands(script: &str) -> Vec<Command> {
    let mut reader = Reader {
        commands: Vec::new(),
        words: Vec::new(),
        word: String::new(),
        in_word: false,
        skip_next_word: false,
    };
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                reader.in_word = true;
                for inner in chars.by_ref() {
                    if inner == '\'' {
                        break;
                    }
                    reader.word.push(inner);
                }
            }
            '"' => {
                reader.in_word = true;
                while let Some(inner) = chars.next() {
                    match inner {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(escaped @ ('"' | '\\' | '$' | '`')) => reader.word.push(escaped),
                            Some('\n') | None => {}
                            Some(other) => {
                                reader.word.push('\\');
                                reader.word.push(other);
                            }
                        },
                        other => reader.word.push(other),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(escaped) => {
                    reader.in_word = true;
                    reader.word.push(escaped);
                }
            },
            '$' if chars.peek() == Some(&'(') => {
                // Command substitution: keep it inside the current word.
                reader.in_word = true;
                reader.word.push('$');
                let mut depth = 0usize;
                for inner in chars.by_ref() {
                    reader.word.push(inner);
                    match inner {
                        '(' => depth += 1,
                        ')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '`' => {
                reader.in_word = true;
                for inner in chars.by_ref() {
                    if inner == '`' {
                        break;
                    }
                    reader.word.push(inner);
                }
            }
            '#' if !reader.in_word => {
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
                reader.end_command();
            }
            '>' | '<' => {
                // `2>file`: the digits are a file descriptor, not a word.
                if reader.in_word && reader.word.chars().all(|d| d.is_ascii_digit()) {
                    reader.word.clear();
                    reader.in_word = false;
                }
                reader.end_word();
                // `>>`, `>&2`, `<<<`: swallow the operator's tail.
                while let Some(next) = chars.peek() {
                    if matches!(next, '>' | '<' | '&' | '|') {
                        chars.next();
                    } else {
                        break;
                    }
                }
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                } else {
                    reader.skip_next_word = true;
                }
            }
            ';' | '&' | '|' | '\n' | '(' | ')' => reader.end_command(),
            c if c.is_whitespace() => reader.end_word(),
            c => {
                reader.in_word = true;
                reader.word.push(c);
            }
        }
    }
    reader.end_command();
    reader.commands
}

struct Reader {
    commands: Vec<Command>,
    words: Vec<String>,
    word: String,
    in_word: bool,
    skip_next_word: bool,
}

impl Reader {
    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        let word = std::mem::take(&mut self.word);
        self.in_word = false;
        if self.skip_next_word {
            self.skip_next_word = false;
            return;
        }
        if matches!(word.as_str(), "{" | "}") {
            self.end_command();
            return;
        }
        self.words.push(word);
    }

    fn end_command(&mut self) {
        self.end_word();
        self.skip_next_word = false;
        let words = std::mem::take(&mut self.words);
        let only_closer = words.len() == 1 && matches!(words[0].as_str(), "fi" | "done" | "esac");
        if !words.is_empty() && !only_closer {
            self.commands.push(Command { words });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(script: &str) -> Vec<String> {
        commands(script)
            .iter()
            .filter_map(|command| command.program().map(str::to_owned))
            .collect()
    }

    #[test]
    fn splits_on_operators() {
        assert_eq!(
            programs("apt-get update && apt-get install -y x; rm -rf /a || true | cat & wait"),
            vec!["apt-get", "apt-get", "rm", "true", "cat", "wait"]
        );
    }

    #[test]
    fn quotes_comments_and_redirections() {
        let parsed = commands("echo 'a && b' \"c;d\" > /out 2>&1 # trailing && sudo\nls");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].words, vec!["echo", "a && b", "c;d"]);
        assert_eq!(parsed[1].words, vec!["ls"]);
    }

    #[test]
    fn wrappers_and_assignments() {
        let parsed = commands("DEBIAN_FRONTEND=noninteractive sudo -u root apt-get -y install x");
        assert_eq!(parsed[0].invoked()[0], "sudo");
        assert_eq!(parsed[0].program(), Some("apt-get"));
        assert_eq!(parsed[0].subcommand(&["-o"]), Some("install"));
    }

    #[test]
    fn substitutions_and_blocks() {
        let parsed = commands("if [ -f x ]; then { cd /a; }; fi\nX=$(cat a; cat b) make");
        let programs: Vec<&str> = parsed.iter().filter_map(Command::program).collect();
        assert_eq!(programs, vec!["[", "cd", "make"]);
    }
}
