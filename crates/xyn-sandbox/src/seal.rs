//! Sealing the worker process before it runs untrusted code (Linux).
//!
//! 1. **Landlock**: the filesystem rights the worker depends on (ABI v3: read, write,
//!    create, remove, rename/link across directories (`Refer`), truncate) are *required*
//!    (`CompatLevel::HardRequirement`): if the kernel cannot enforce them, sealing fails
//!    rather than silently running unsandboxed. Access is granted only beneath the given
//!    read roots (read-only) and write roots. Newer rights are added best-effort:
//!    `ioctl` on devices (v5), TCP bind/connect denied entirely (v4), abstract UNIX
//!    sockets and signals scoped to the sandbox (v6).
//! 2. **seccomp** (applied to all threads with TSYNC): `execve`/`execveat`, `fork`, `vfork`,
//!    `clone` without `CLONE_THREAD`, `ptrace`, `process_vm_*`, `socket` (any family: the
//!    worker has no network; HTTP goes through the node), `io_uring_*`, `bpf`,
//!    `perf_event_open`, `userfaultfd`, mounts and namespaces, keyrings and modules fail
//!    with `EPERM`; `clone3` fails with `ENOSYS`, so libc falls back to `clone` and threads
//!    still work.
//!
//! Both are applied before any thread starts; threads made later inherit them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, codes};

/// What to seal with.
#[derive(Clone, Debug, Default)]
pub struct SealConfig {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Test hook (builds with the `test-hooks` feature only): behave as on a kernel
    /// without Landlock, to exercise the weak-sandbox path on a machine that has it.
    pub simulate_no_landlock: bool,
}

/// The environment variable the node reads, in builds with the `test-hooks` feature, to
/// start its workers as if the kernel had no Landlock.
pub const TEST_NO_LANDLOCK_ENV: &str = "XYN_TEST_NO_LANDLOCK";

/// Whether this build honours the test hooks (`XYN_TEST_NO_LANDLOCK`, the worker's
/// `--test-no-landlock`). Release builds do not.
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

/// Whether the node should start its workers as if the kernel had no Landlock: only in
/// builds with the `test-hooks` feature, and only when `XYN_TEST_NO_LANDLOCK=1`.
pub fn test_no_landlock_requested() -> bool {
    TEST_HOOKS && std::env::var(TEST_NO_LANDLOCK_ENV).is_ok_and(|v| v == "1")
}

/// What sealing achieved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SealReport {
    /// The kernel's Landlock ABI version, when Landlock is available.
    pub landlock_abi: Option<i32>,
    /// `full`, `partial` or `none`.
    pub landlock: String,
    pub seccomp: bool,
    pub no_new_privs: bool,
    pub notes: Vec<String>,
}

impl SealReport {
    /// Whether the filesystem rules and the syscall filter are both in force.
    pub fn sealed(&self) -> bool {
        self.landlock != "none" && self.seccomp
    }
}

/// Seals the calling process. With `required`, a kernel without Landlock is an error
/// (`sandbox.weak`); without it, the worker continues with whatever could be applied.
pub fn seal(cfg: &SealConfig, required: bool) -> Result<SealReport, SandboxError> {
    imp::seal(cfg, required)
}

/// Holds the calling process's data segment — heap and private writable mappings
/// (`RLIMIT_DATA`, which Linux counts for anonymous `mmap` too) — to `bytes`, soft and hard
/// limit alike, so it can never be raised again. `RLIMIT_AS` is not used: wasmtime's
/// pooling allocator reserves (without committing) far more address space than any
/// budget.
pub fn limit_memory(bytes: u64) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        setrlimit(
            Resource::Data,
            Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            },
        )
        .map_err(|e| format!("setrlimit(RLIMIT_DATA): {e}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        Err("no RLIMIT_DATA on this platform".into())
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::BTreeMap;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::*;

    /// The ABI whose filesystem rights are required.
    const REQUIRED: ABI = ABI::V3;

    pub fn seal(cfg: &SealConfig, required: bool) -> Result<SealReport, SandboxError> {
        let mut report = SealReport {
            landlock: "none".into(),
            ..Default::default()
        };
        let landlock_result = if cfg.simulate_no_landlock && super::TEST_HOOKS {
            Err(format!(
                "this kernel has no Landlock (simulated by the test hook {})",
                super::TEST_NO_LANDLOCK_ENV
            ))
        } else {
            landlock(cfg).map_err(|e| e.to_string())
        };
        match landlock_result {
            Ok(status) => {
                report.no_new_privs = status.no_new_privs;
                if let LandlockStatus::Available {
                    effective_abi,
                    kernel_abi,
                } = status.landlock
                {
                    report.landlock_abi = Some(kernel_abi.unwrap_or(effective_abi as i32));
                }
                report.landlock = match status.ruleset {
                    RulesetStatus::FullyEnforced => "full",
                    RulesetStatus::PartiallyEnforced => "partial",
                    RulesetStatus::NotEnforced => "none",
                }
                .into();
            }
            Err(e) => {
                report.notes.push(format!("landlock: {e}"));
                if required {
                    return Err(SandboxError::new(
                        codes::SANDBOX_WEAK,
                        format!("Landlock cannot enforce the required filesystem rules: {e}"),
                    ));
                }
            }
        }
        match seccomp() {
            Ok(()) => report.seccomp = true,
            Err(e) => {
                report.notes.push(format!("seccomp: {e}"));
                if required {
                    return Err(SandboxError::new(
                        codes::SANDBOX_WEAK,
                        format!("the seccomp filter cannot be applied: {e}"),
                    ));
                }
            }
        }
        Ok(report)
    }

    fn landlock(cfg: &SealConfig) -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(REQUIRED))?
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(ABI::V5))?
            .handle_access(AccessNet::from_all(ABI::V4))?
            .scope(Scope::from_all(ABI::V6))?
            .create()?
            .set_compatibility(CompatLevel::HardRequirement)
            .add_rules(path_beneath_rules(&cfg.read, AccessFs::from_read(REQUIRED)))?
            .add_rules(path_beneath_rules(&cfg.write, AccessFs::from_all(REQUIRED)))?;
        ruleset.restrict_self()
    }

    fn arch() -> Result<TargetArch, String> {
        if cfg!(target_arch = "x86_64") {
            Ok(TargetArch::x86_64)
        } else if cfg!(target_arch = "aarch64") {
            Ok(TargetArch::aarch64)
        } else {
            Err("unsupported architecture for the seccomp filter".into())
        }
    }

    fn denied_syscalls() -> Vec<i64> {
        let mut v = vec![
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_socket,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_kexec_load,
            libc::SYS_open_by_handle_at,
            libc::SYS_name_to_handle_at,
            libc::SYS_personality,
            libc::SYS_mount_setattr,
            libc::SYS_fsopen,
            libc::SYS_fsmount,
            libc::SYS_move_mount,
            libc::SYS_open_tree,
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([libc::SYS_fork, libc::SYS_vfork]);
        v
    }

    fn seccomp() -> Result<(), String> {
        let arch = arch()?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied_syscalls()
            .into_iter()
            .map(|s| (s, Vec::new()))
            .collect();
        // clone without CLONE_THREAD makes a process; with it, a thread.
        let new_process = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            0,
        )
        .map_err(|e| e.to_string())?;
        rules.insert(
            libc::SYS_clone,
            vec![SeccompRule::new(vec![new_process]).map_err(|e| e.to_string())?],
        );
        let deny: BpfProgram = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .and_then(TryInto::try_into)
        .map_err(|e| e.to_string())?;
        let clone3: BpfProgram = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .and_then(TryInto::try_into)
        .map_err(|e| e.to_string())?;
        seccompiler::apply_filter_all_threads(&deny).map_err(|e| e.to_string())?;
        seccompiler::apply_filter_all_threads(&clone3).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub fn seal(_cfg: &SealConfig, required: bool) -> Result<SealReport, SandboxError> {
        if required {
            return Err(SandboxError::new(
                codes::SANDBOX_WEAK,
                "this platform has no Landlock or seccomp",
            ));
        }
        Ok(SealReport {
            landlock: "none".into(),
            notes: vec!["no kernel sandbox on this platform".into()],
            ..Default::default()
        })
    }
}
