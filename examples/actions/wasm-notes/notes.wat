;; demo.wasm_notes: a WebAssembly core module (text format, compiled at install) that
;; uses the fs, db and http capabilities through the host functions of import module "xyn".
;;
;; ABI: exports memory, alloc(len) -> ptr and handle(ptr, len) -> (ptr << 32 | len).
;; Every host function takes a JSON argument object (ptr, len) and returns, packed the same
;; way, a JSON envelope {"ok": result} or {"error": {"code", "message"}} written into this
;; module's memory through its alloc. The output here is built from those envelopes.
(module
  (import "xyn" "fs_read" (func $fs_read (param i32 i32) (result i64)))
  (import "xyn" "fs_write" (func $fs_write (param i32 i32) (result i64)))
  (import "xyn" "db_exec" (func $db_exec (param i32 i32) (result i64)))
  (import "xyn" "db_query" (func $db_query (param i32 i32) (result i64)))
  (import "xyn" "http_request" (func $http_request (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $out (mut i32) (i32.const 0))

  ;; read_args: 25 bytes at 16
  (data (i32.const 16) "{\"path\":\"inbox/note.txt\"}")
  ;; write_args: 48 bytes at 64
  (data (i32.const 64) "{\"path\":\"outbox/seen.txt\",\"data\":\"seen by wasm\"}")
  ;; ddl_args: 66 bytes at 128
  (data (i32.const 128) "{\"sql\":\"CREATE TABLE IF NOT EXISTS visits(n INTEGER)\",\"params\":[]}")
  ;; ins_args: 56 bytes at 224
  (data (i32.const 224) "{\"sql\":\"INSERT INTO visits(n) VALUES (?1)\",\"params\":[1]}")
  ;; q_args: 59 bytes at 304
  (data (i32.const 304) "{\"sql\":\"SELECT count(*) AS visits FROM visits\",\"params\":[]}")
  ;; o1: 23 bytes at 384
  (data (i32.const 384) "{\"runtime\":\"wasm\",\"fs\":")
  ;; o2: 6 bytes at 432
  (data (i32.const 432) ",\"db\":")
  ;; o3: 8 bytes at 464
  (data (i32.const 464) ",\"http\":")
  ;; o4: 1 bytes at 496
  (data (i32.const 496) "}")

  ;; A bump allocator that grows memory as needed.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end
      (i32.and (i32.add (i32.add (local.get $p) (local.get $len)) (i32.const 7)) (i32.const -8)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func $ptr (param $r i64) (result i32) (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32))))
  (func $len (param $r i64) (result i32) (i32.wrap_i64 (i64.and (local.get $r) (i64.const 0xffffffff))))
  (func $put (param $p i32) (param $n i32)
    (memory.copy (global.get $out) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))
  (func $put_env (param $r i64) (call $put (call $ptr (local.get $r)) (call $len (local.get $r))))

  ;; input: {"url": "..."}, passed on as the http.request argument object.
  (func (export "handle") (param $in i32) (param $in_len i32) (result i64)
    (local $fs i64) (local $q i64) (local $h i64) (local $start i32) (local $total i32)
    (local.set $fs (call $fs_read (i32.const 16) (i32.const 25)))
    (drop (call $fs_write (i32.const 64) (i32.const 48)))
    (drop (call $db_exec (i32.const 128) (i32.const 66)))
    (drop (call $db_exec (i32.const 224) (i32.const 56)))
    (local.set $q (call $db_query (i32.const 304) (i32.const 59)))
    (local.set $h (call $http_request (local.get $in) (local.get $in_len)))
    (local.set $total
      (i32.add (i32.const 38)
        (i32.add (call $len (local.get $fs))
          (i32.add (call $len (local.get $q)) (call $len (local.get $h))))))
    (local.set $start (call $alloc (local.get $total)))
    (global.set $out (local.get $start))
    (call $put (i32.const 384) (i32.const 23))
    (call $put_env (local.get $fs))
    (call $put (i32.const 432) (i32.const 6))
    (call $put_env (local.get $q))
    (call $put (i32.const 464) (i32.const 8))
    (call $put_env (local.get $h))
    (call $put (i32.const 496) (i32.const 1))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $start)) (i64.const 32))
      (i64.extend_i32_u (local.get $total))))
)
