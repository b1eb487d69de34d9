;; demo.component_notes: a WebAssembly component in the component-model text format
;; (compiled at install with the `wat` crate; no other toolchain needed). It implements the
;; world `xyn-action` of wit/xyn-action.wit: it imports `xyn:action/host` and exports
;; `handle: func(input: string) -> result<string, string>`.
;;
;; Layout, as a toolchain would produce it: a small "libc" core module owns the linear
;; memory and `realloc` (the canonical ABI needs both to pass strings in and out), the host
;; functions are lowered against them, and the main core module imports both.
;;
;; It reads a note (`call` with "fs.read", whose result is JSON text), writes one back
;; (`fs-write`), counts a visit in its own database (`db-exec`, `db-query`) and passes its
;; input {"url": …} on to `http-request`. Output:
;; {"runtime":"component","fs":<note>,"db":<rows>,"http":<response>}
(component
  (import "xyn:action/host@0.1.0" (instance $host
    (type $ce (record (field "code" string) (field "message" string)))
    (export "cap-error" (type $cap-error (eq $ce)))
    (type $r-str (result string (error $cap-error)))
    (type $r-unit (result (error $cap-error)))
    (export "call" (func (param "name" string) (param "args" string) (result $r-str)))
    (export "fs-write" (func (param "path" string) (param "data" string) (result $r-unit)))
    (export "http-request" (func (param "request" string) (result $r-str)))
    (export "db-query" (func (param "sql" string) (param "params" string) (result $r-str)))
    (export "db-exec" (func (param "sql" string) (param "params" string) (result $r-str)))
  ))

  (core module $libc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 16384))
    ;; realloc(old, old_size, align, size): a bump allocator that grows memory as needed.
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (block $done
        (loop $grow
          (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
          (br $grow)))
      (global.set $heap (local.get $end))
      (if (local.get $old)
        (then (memory.copy (local.get $p) (local.get $old) (local.get $old_size))))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (alias core export $libc "memory" (core memory $mem))
  (alias core export $libc "realloc" (core func $realloc))

  (core func $call (canon lower (func $host "call") (memory $mem) (realloc $realloc)))
  (core func $fs-write (canon lower (func $host "fs-write") (memory $mem) (realloc $realloc)))
  (core func $http-request (canon lower (func $host "http-request") (memory $mem) (realloc $realloc)))
  (core func $db-query (canon lower (func $host "db-query") (memory $mem) (realloc $realloc)))
  (core func $db-exec (canon lower (func $host "db-exec") (memory $mem) (realloc $realloc)))

  (core module $main
    (import "libc" "memory" (memory 1))
    (import "libc" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    ;; Lowered signatures: strings are (ptr, len); a result is written at the last
    ;; argument: byte 0 is the case (0 ok, 1 err), ok's string at +4/+8, err's cap-error
    ;; {code, message} at +4/+8 and +12/+16.
    (import "host" "call" (func $call (param i32 i32 i32 i32 i32)))
    (import "host" "fs-write" (func $fs-write (param i32 i32 i32 i32 i32)))
    (import "host" "http-request" (func $http-request (param i32 i32 i32)))
    (import "host" "db-query" (func $db-query (param i32 i32 i32 i32 i32)))
    (import "host" "db-exec" (func $db-exec (param i32 i32 i32 i32 i32)))

    (global $out (mut i32) (i32.const 0))

    (data (i32.const 1024) "fs.read")                                         ;; 7
    (data (i32.const 1040) "{\"path\":\"inbox/note.txt\"}")                   ;; 25
    (data (i32.const 1072) "outbox/seen.txt")                                 ;; 15
    (data (i32.const 1088) "seen by component")                               ;; 17
    (data (i32.const 1120) "CREATE TABLE IF NOT EXISTS visits(n INTEGER)")    ;; 44
    (data (i32.const 1168) "INSERT INTO visits(n) VALUES (?1)")               ;; 33
    (data (i32.const 1216) "SELECT count(*) AS visits FROM visits")           ;; 37
    (data (i32.const 1264) "[]")                                              ;; 2
    (data (i32.const 1272) "[1]")                                             ;; 3
    (data (i32.const 1280) "{\"runtime\":\"component\",\"fs\":")             ;; 28
    (data (i32.const 1312) ",\"db\":")                                        ;; 6
    (data (i32.const 1320) ",\"http\":")                                      ;; 8
    (data (i32.const 1328) "}")                                               ;; 1

    ;; Where results land (20 bytes each) and where handle's own result goes.
    (global $r_fs i32 (i32.const 512))
    (global $r_w i32 (i32.const 544))
    (global $r_x i32 (i32.const 576))
    (global $r_q i32 (i32.const 608))
    (global $r_h i32 (i32.const 640))
    (global $ret i32 (i32.const 256))

    ;; handle's result<string, string>: case byte at 256, (ptr, len) at 260/264.
    (func $ret (param $case i32) (param $p i32) (param $n i32) (result i32)
      (i32.store8 (global.get $ret) (local.get $case))
      (i32.store offset=4 (global.get $ret) (local.get $p))
      (i32.store offset=8 (global.get $ret) (local.get $n))
      (global.get $ret))
    ;; 1 when a host call failed (its result's case byte is 1).
    (func $failed (param $r i32) (result i32) (i32.load8_u (local.get $r)))
    ;; err(message) of a failed host call.
    (func $err_of (param $r i32) (result i32)
      (call $ret (i32.const 1)
        (i32.load offset=12 (local.get $r)) (i32.load offset=16 (local.get $r))))
    (func $put (param $p i32) (param $n i32)
      (memory.copy (global.get $out) (local.get $p) (local.get $n))
      (global.set $out (i32.add (global.get $out) (local.get $n))))
    (func $put_ok (param $r i32)
      (call $put (i32.load offset=4 (local.get $r)) (i32.load offset=8 (local.get $r))))
    (func $ok_len (param $r i32) (result i32) (i32.load offset=8 (local.get $r)))

    (func (export "handle") (param $in i32) (param $in_len i32) (result i32)
      (local $start i32) (local $total i32)
      (call $call (i32.const 1024) (i32.const 7) (i32.const 1040) (i32.const 25) (global.get $r_fs))
      (if (call $failed (global.get $r_fs)) (then (return (call $err_of (global.get $r_fs)))))
      (call $fs-write (i32.const 1072) (i32.const 15) (i32.const 1088) (i32.const 17) (global.get $r_w))
      (if (call $failed (global.get $r_w)) (then (return (call $err_of (global.get $r_w)))))
      (call $db-exec (i32.const 1120) (i32.const 44) (i32.const 1264) (i32.const 2) (global.get $r_x))
      (if (call $failed (global.get $r_x)) (then (return (call $err_of (global.get $r_x)))))
      (call $db-exec (i32.const 1168) (i32.const 33) (i32.const 1272) (i32.const 3) (global.get $r_x))
      (if (call $failed (global.get $r_x)) (then (return (call $err_of (global.get $r_x)))))
      (call $db-query (i32.const 1216) (i32.const 37) (i32.const 1264) (i32.const 2) (global.get $r_q))
      (if (call $failed (global.get $r_q)) (then (return (call $err_of (global.get $r_q)))))
      (call $http-request (local.get $in) (local.get $in_len) (global.get $r_h))
      (if (call $failed (global.get $r_h)) (then (return (call $err_of (global.get $r_h)))))
      (local.set $total
        (i32.add (i32.const 43)
          (i32.add (call $ok_len (global.get $r_fs))
            (i32.add (call $ok_len (global.get $r_q)) (call $ok_len (global.get $r_h))))))
      (local.set $start (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $total)))
      (global.set $out (local.get $start))
      (call $put (i32.const 1280) (i32.const 28))
      (call $put_ok (global.get $r_fs))
      (call $put (i32.const 1312) (i32.const 6))
      (call $put_ok (global.get $r_q))
      (call $put (i32.const 1320) (i32.const 8))
      (call $put_ok (global.get $r_h))
      (call $put (i32.const 1328) (i32.const 1))
      (call $ret (i32.const 0) (local.get $start) (local.get $total))))

  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance
      (export "call" (func $call))
      (export "fs-write" (func $fs-write))
      (export "http-request" (func $http-request))
      (export "db-query" (func $db-query))
      (export "db-exec" (func $db-exec))))))

  (func $handle (param "input" string) (result (result string (error string)))
    (canon lift (core func $main "handle") (memory $mem) (realloc $realloc)))
  (export "handle" (func $handle))
)
