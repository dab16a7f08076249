//! The languages generated programs are run in: the file a program is written to, how it is
//! compiled (if at all) and run, the toolchain that must be installed, and the sandbox limits
//! its runtime needs (a JVM or V8 reserves gigabytes of address space before it runs a line,
//! so their address-space cap is higher and the heap is capped by a flag instead).

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    /// MultiPL-E's `sh`: run by bash.
    Bash,
    /// MultiPL-E's `js`.
    JavaScript,
    /// MultiPL-E's `ts`.
    TypeScript,
    Cpp,
    Java,
    Php,
    /// MultiPL-E's `cs`.
    CSharp,
    /// MultiPL-E's `rs`.
    Rust,
    Go,
}

/// How a program of a language is built and run, as shell commands over `FILE` (the source
/// file's name) in the program's own directory.
pub struct Toolchain {
    /// The source file's name.
    pub file: &'static str,
    /// Compiles it (exit status ≠ 0: a compile error); `None` for interpreted languages.
    pub compile: Option<&'static str>,
    pub run: &'static str,
    /// Programs that must be on PATH.
    pub needs: &'static [&'static str],
    /// The address-space cap (bytes) the runtime needs to start, where that is more than the
    /// program's memory allowance (a JVM or V8 reserves gigabytes up front; their heap is
    /// capped by a flag instead); 0: the allowance is the cap.
    pub address_space: u64,
}

const GIB: u64 = 1 << 30;

impl Language {
    pub const ALL: [Language; 10] = [
        Language::Python,
        Language::Bash,
        Language::JavaScript,
        Language::TypeScript,
        Language::Cpp,
        Language::Java,
        Language::Php,
        Language::CSharp,
        Language::Rust,
        Language::Go,
    ];

    /// MultiPL-E's name of the language (its dataset configs are `humaneval-NAME`,
    /// `mbpp-NAME`).
    pub fn multipl_e_name(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::Bash => "sh",
            Language::JavaScript => "js",
            Language::TypeScript => "ts",
            Language::Cpp => "cpp",
            Language::Java => "java",
            Language::Php => "php",
            Language::CSharp => "cs",
            Language::Rust => "rs",
            Language::Go => "go",
        }
    }

    /// From MultiPL-E's name or the common one (`python`, `cpp`, `c++`, `javascript`, ...).
    pub fn parse(name: &str) -> Result<Self> {
        let n = name.to_ascii_lowercase();
        for l in Self::ALL {
            if n == l.multipl_e_name() || n == l.name() {
                return Ok(l);
            }
        }
        Ok(match n.as_str() {
            "c++" => Language::Cpp,
            "shell" | "sh" | "bash" => Language::Bash,
            "node" => Language::JavaScript,
            "c#" | "csharp" => Language::CSharp,
            "rust" => Language::Rust,
            _ => bail!(
                "{name:?} is not a language exec-eval runs (one of: {})",
                Self::ALL.map(|l| l.multipl_e_name()).join(", ")
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Bash => "bash",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Cpp => "cpp",
            Language::Java => "java",
            Language::Php => "php",
            Language::CSharp => "csharp",
            Language::Rust => "rust",
            Language::Go => "go",
        }
    }

    /// The fence tag models use for it in markdown.
    pub fn fence(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["python", "py", "python3"],
            Language::Bash => &["bash", "sh", "shell"],
            Language::JavaScript => &["javascript", "js"],
            Language::TypeScript => &["typescript", "ts"],
            Language::Cpp => &["cpp", "c++"],
            Language::Java => &["java"],
            Language::Php => &["php"],
            Language::CSharp => &["csharp", "cs", "c#"],
            Language::Rust => &["rust", "rs"],
            Language::Go => &["go", "golang"],
        }
    }

    pub fn toolchain(self) -> Toolchain {
        match self {
            Language::Python => Toolchain {
                file: "prog.py",
                compile: None,
                run: "exec python3 prog.py",
                needs: &["python3"],
                address_space: 0,
            },
            Language::Bash => Toolchain {
                file: "prog.sh",
                compile: None,
                run: "exec bash prog.sh",
                needs: &["bash"],
                address_space: 0,
            },
            Language::JavaScript => Toolchain {
                file: "prog.js",
                compile: None,
                run: "exec node --max-old-space-size=1024 prog.js",
                needs: &["node"],
                address_space: 64 * GIB,
            },
            Language::TypeScript => Toolchain {
                file: "prog.ts",
                compile: Some("tsc --target es2019 prog.ts"),
                run: "exec node --max-old-space-size=1024 prog.js",
                needs: &["tsc", "node"],
                address_space: 64 * GIB,
            },
            Language::Cpp => Toolchain {
                file: "prog.cpp",
                compile: Some("g++ -std=c++17 -O1 -o prog prog.cpp"),
                run: "exec ./prog",
                needs: &["g++"],
                address_space: 0,
            },
            // MultiPL-E's Java programs are `class Problem`, so the file is Problem.java.
            Language::Java => Toolchain {
                file: "Problem.java",
                compile: Some("javac -J-Xmx512m -J-XX:ReservedCodeCacheSize=64m Problem.java"),
                run: "exec java -ea -Xmx512m -Xss16m -XX:ReservedCodeCacheSize=64m -XX:+UseSerialGC Problem",
                needs: &["javac", "java"],
                address_space: 16 * GIB,
            },
            Language::Php => Toolchain {
                file: "prog.php",
                compile: None,
                run: "exec php prog.php",
                needs: &["php"],
                address_space: 0,
            },
            Language::CSharp => Toolchain {
                file: "prog.cs",
                compile: Some("mcs -r:System.Numerics.dll -out:prog.exe prog.cs"),
                run: "exec mono prog.exe",
                needs: &["mcs", "mono"],
                address_space: 16 * GIB,
            },
            Language::Rust => Toolchain {
                file: "prog.rs",
                compile: Some("rustc --edition 2021 -O -o prog prog.rs"),
                run: "exec ./prog",
                needs: &["rustc"],
                address_space: 0,
            },
            Language::Go => Toolchain {
                file: "prog_test.go",
                compile: None,
                run: "exec go test prog_test.go",
                needs: &["go"],
                address_space: 16 * GIB,
            },
        }
    }

    /// The first program this language needs that is not on PATH, if any.
    pub fn missing_tool(self) -> Option<&'static str> {
        self.toolchain().needs.iter().copied().find(|t| which(t).is_none())
    }
}

/// The path of program `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_listed() {
        for l in Language::ALL {
            assert_eq!(Language::parse(l.multipl_e_name()).unwrap(), l);
            assert_eq!(Language::parse(l.name()).unwrap(), l);
        }
        assert_eq!(Language::parse("C++").unwrap(), Language::Cpp);
        let e = Language::parse("cobol").unwrap_err().to_string();
        assert!(e.contains("cobol") && e.contains("py, sh, js"), "{e}");
    }

    #[test]
    fn bash_is_on_every_machine_and_a_made_up_tool_is_not() {
        assert_eq!(Language::Bash.missing_tool(), None);
        assert!(which("no-such-tool-syncoder").is_none());
    }
}
