//! Which statements a plugin may not send: those that end, split or reopen the host's
//! transaction.
//!
//! Privileges cannot stop a session from running `COMMIT`, so this is the one place the
//! host looks at a plugin's SQL. It needs only the statement's first keyword: the `db`
//! import sends every statement over the extended protocol, which carries exactly one
//! statement (PostgreSQL refuses "multiple commands" there), and a transaction command
//! must be a statement of its own. Anything nested (`DO`, a procedure's `COMMIT`) is
//! refused by PostgreSQL itself inside a transaction block ("invalid transaction
//! termination"). The scan follows PostgreSQL's lexer for what may come before the first
//! keyword: whitespace, `--` and nested `/* */` comments, and empty statements (`;`).

/// First keywords of the statements a plugin may not run, and why each is the host's.
const REFUSED: &[&str] = &[
    "ABORT",
    "BEGIN",
    "COMMIT",
    "END",
    "RELEASE",
    "ROLLBACK",
    "SAVEPOINT",
    "START",
    // `PREPARE TRANSACTION` detaches the transaction; a named `PREPARE` would outlive the
    // invocation. The host prepares statements itself, so plugins lose nothing.
    "PREPARE",
    // Would remove the host's own prepared statements from under it.
    "DEALLOCATE",
];

/// `Some(keyword)` when the statement is transaction control (or statement preparation)
/// that only the host may do.
pub fn refused_keyword(sql: &str) -> Option<&'static str> {
    let word = first_word(sql)?;
    REFUSED
        .iter()
        .find(|k| k.eq_ignore_ascii_case(word))
        .copied()
}

/// True when the statement can define or run code of the plugin's own (`CREATE FUNCTION`,
/// `DO`, ...): from then on its sessions are checked for prepared statements that such code
/// can make (see `session.rs`).
pub fn defines_code(sql: &str) -> bool {
    first_word(sql)
        .is_some_and(|w| w.eq_ignore_ascii_case("CREATE") || w.eq_ignore_ascii_case("DO"))
}

/// The first word of the statement, after what PostgreSQL's lexer skips.
fn first_word(sql: &str) -> Option<&str> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // PostgreSQL's whitespace: space, \t, \n, \r, \f, \v.
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b | b';' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            _ => break,
        }
    }
    // An identifier or keyword: letters, `_` and any non-ASCII byte, then also digits and
    // `$`. A word that is longer than a keyword (`commitx`, `commit\u{e9}`) is not one.
    let start = i;
    while i < bytes.len() {
        let b = bytes[i];
        let ident = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
        if !(ident || (i > start && (b.is_ascii_digit() || b == b'$'))) {
            break;
        }
        i += 1;
    }
    // Word boundaries fall on ASCII bytes or the end, so the slice is valid UTF-8.
    (i > start).then(|| &sql[start..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_transaction_control_is_refused() {
        let refused = [
            "COMMIT",
            "commit",
            "CoMmIt;",
            "  \n\tCOMMIT",
            "\x0bCOMMIT",
            "\x0cCOMMIT",
            ";COMMIT",
            ";;  ;commit work",
            "-- a comment\nCOMMIT",
            "--\rCOMMIT",
            "/* c */ COMMIT",
            "/* outer /* nested */ still comment */COMMIT",
            "/**/END",
            "END",
            "end transaction",
            "ROLLBACK",
            "rollback and no chain",
            "ABORT",
            "COMMIT AND CHAIN",
            "ROLLBACK AND CHAIN",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "RELEASE a",
            "ROLLBACK TO SAVEPOINT a",
            "ROLLBACK TO a",
            "BEGIN",
            "START TRANSACTION",
            "PREPARE p AS SELECT 1",
            "DEALLOCATE ALL",
            "COMMIT; SELECT 1",
        ];
        for sql in refused {
            assert!(refused_keyword(sql).is_some(), "{sql:?} was let through");
        }
    }

    #[test]
    fn code_definitions_are_noticed() {
        for sql in [
            "CREATE FUNCTION f() ...",
            "create or replace procedure p()",
            "/* x */ DO $$ $$",
        ] {
            assert!(defines_code(sql), "{sql}");
        }
        for sql in ["SELECT f()", "INSERT INTO created VALUES (1)", "DOX"] {
            assert!(!defines_code(sql), "{sql}");
        }
    }

    #[test]
    fn ordinary_statements_pass() {
        let allowed = [
            "SELECT 1",
            "INSERT INTO commits (x) VALUES (1)",
            "committed",
            "COMMIT2",
            "commit\u{e9}",
            "\u{a0}COMMIT",
            "\"COMMIT\"",
            "UPDATE t SET x = 1 -- COMMIT",
            "SELECT 'COMMIT'",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "CALL p()",
            "DO $$ BEGIN COMMIT; END $$",
            "/* unterminated COMMIT",
            "",
            "   ",
        ];
        for sql in allowed {
            assert_eq!(refused_keyword(sql), None, "{sql:?}");
        }
    }
}
