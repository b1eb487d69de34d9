//! Set-up shared by the sandbox's integration tests: the runtimes and the wasm ABI
//! boilerplate every hand-written guest module needs.
#![allow(dead_code)] // each test binary uses a part

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rt {
    Wasm,
    Lua,
    Js,
}

pub const ALL: [Rt; 3] = [Rt::Wasm, Rt::Lua, Rt::Js];

impl Rt {
    pub fn name(self) -> &'static str {
        match self {
            Rt::Wasm => "wasm",
            Rt::Lua => "lua",
            Rt::Js => "js",
        }
    }
    pub fn entry(self) -> &'static str {
        match self {
            Rt::Wasm => "main.wat",
            Rt::Lua => "main.lua",
            Rt::Js => "main.js",
        }
    }
}

/// A WAT module with the ABI boilerplate (memory, bump alloc, the `call` import) and
/// `body` as extra definitions, among them the exported `handle`.
pub fn wat(body: &str) -> String {
    format!(
        r#"(module
  (import "xyn" "call" (func $call (param i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $len)) (i32.const 7)) (i32.const -8)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (global.set $heap (local.get $end))
    (local.get $p))
  {body}
)"#
    )
}

/// A wasm handle that passes its input to the host call `cap` and returns what it answers.
pub fn wat_forward(cap: &str) -> String {
    wat(&format!(
        r#"(data (i32.const 1024) "{cap}")
  (func (export "handle") (param i32 i32) (result i64)
    (call $call (i32.const 1024) (i32.const {}) (local.get 0) (local.get 1)))"#,
        cap.len()
    ))
}
