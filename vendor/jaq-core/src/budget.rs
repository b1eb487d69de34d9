//! Xyn patch: an evaluation budget checked by the evaluator itself.
//!
//! jaq evaluates recursively and has no notion of fuel, so a program such as
//! `def f: 1 + f; f` overflows the thread's stack and `last(range(1e11))` runs for hours.
//! [`Budget::enter`] arms a budget for the current thread; while it is armed,
//! [`tick`] is called at the start of every `run`, `paths` and `update` of a term (and for
//! every element an array collects) and fails once the fuel is spent or the evaluation has
//! used more stack than allowed; [`charge`] and [`reserve`] account the bytes of values built
//! (strings, arrays, objects) against a memory allowance.
//!
//! Exhaustion is sticky: once a limit was hit, every later `tick` fails too, so a program that
//! catches the error (`try … catch`) cannot continue. The caller asks [`exceeded`] after the
//! run and reports the limit, whatever the program's own outcome was.
//!
//! Stack use is measured safely as the distance between the address of a local variable at
//! [`Budget::enter`] and one in [`tick`]. The state lives in a thread-local because the value
//! operations of `jaq-json` (`"x" * n`, `a + b`) have no access to the evaluation context.
//! Without an armed budget every check passes (unpatched behaviour).

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which limit an evaluation ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// The fuel (number of evaluation steps) was spent.
    Fuel,
    /// The evaluation nested deeper than its stack allowance.
    Stack,
    /// The values built exceeded the memory allowance.
    Memory,
    /// The caller cancelled the evaluation (its deadline passed).
    Cancelled,
}

/// Limits of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Evaluation steps (terms run) allowed.
    pub fuel: u64,
    /// Bytes of values that may be built.
    pub memory: u64,
    /// Bytes of stack the evaluation may use below the point where it was entered.
    pub stack: usize,
}

struct State {
    armed: Cell<bool>,
    fuel: Cell<u64>,
    memory: Cell<u64>,
    stack_base: Cell<usize>,
    stack: Cell<usize>,
    exceeded: Cell<Option<Exceeded>>,
    cancel: RefCell<Option<Arc<AtomicBool>>>,
}

std::thread_local! {
    static STATE: State = const {
        State {
            armed: Cell::new(false),
            fuel: Cell::new(0),
            memory: Cell::new(0),
            stack_base: Cell::new(0),
            stack: Cell::new(0),
            exceeded: Cell::new(None),
            cancel: RefCell::new(None),
        }
    };
}

fn here() -> usize {
    let marker = 0u8;
    core::hint::black_box(&marker) as *const u8 as usize
}

/// Disarms the budget of the thread when dropped.
#[must_use = "the budget is disarmed when the guard is dropped"]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        STATE.with(|s| {
            s.armed.set(false);
            s.exceeded.set(None);
            s.cancel.replace(None);
        });
    }
}

impl Budget {
    /// Arms this budget for evaluations on the current thread until the guard is dropped.
    pub fn enter(self) -> Guard {
        self.enter_cancellable(None)
    }

    /// Like [`Self::enter`]; the evaluation also stops soon after `cancel` is set (it is
    /// looked at every 1,024 steps).
    pub fn enter_cancellable(self, cancel: Option<Arc<AtomicBool>>) -> Guard {
        let base = here();
        STATE.with(|s| {
            s.armed.set(true);
            s.fuel.set(self.fuel);
            s.memory.set(self.memory);
            s.stack_base.set(base);
            s.stack.set(self.stack);
            s.exceeded.set(None);
            s.cancel.replace(cancel);
        });
        Guard(())
    }
}

fn fail(s: &State, e: Exceeded) -> Result<(), Exceeded> {
    if s.exceeded.get().is_none() {
        s.exceeded.set(Some(e));
    }
    Err(s.exceeded.get().unwrap_or(e))
}

/// Spends one unit of fuel and checks the stack; fails once any limit was exceeded.
#[inline]
pub fn tick() -> Result<(), Exceeded> {
    STATE.with(|s| {
        if !s.armed.get() {
            return Ok(());
        }
        if let Some(e) = s.exceeded.get() {
            return Err(e);
        }
        let fuel = s.fuel.get();
        if fuel == 0 {
            return fail(s, Exceeded::Fuel);
        }
        s.fuel.set(fuel - 1);
        if fuel % 1024 == 0
            && s
                .cancel
                .borrow()
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return fail(s, Exceeded::Cancelled);
        }
        if s.stack_base.get().abs_diff(here()) > s.stack.get() {
            return fail(s, Exceeded::Stack);
        }
        Ok(())
    })
}

/// Accounts `bytes` about to be built; fails (before anything is allocated) when they do not
/// fit the memory allowance.
#[inline]
pub fn reserve(bytes: usize) -> Result<(), Exceeded> {
    STATE.with(|s| {
        if !s.armed.get() {
            return Ok(());
        }
        if let Some(e) = s.exceeded.get() {
            return Err(e);
        }
        let left = s.memory.get();
        match left.checked_sub(bytes as u64) {
            Some(rest) => {
                s.memory.set(rest);
                Ok(())
            }
            None => fail(s, Exceeded::Memory),
        }
    })
}

/// Accounts `bytes` already built where failing is not possible; the next [`tick`] fails when
/// they did not fit.
#[inline]
pub fn charge(bytes: usize) {
    let _ = reserve(bytes);
}

/// Spends `n` units of fuel for work done outside a term (scans); the next [`tick`] fails
/// when the fuel ran out.
#[inline]
pub fn charge_fuel(n: u64) {
    STATE.with(|s| {
        if s.armed.get() {
            let fuel = s.fuel.get();
            s.fuel.set(fuel.saturating_sub(n));
        }
    })
}

/// Marks the current evaluation as having exceeded `e`; the next [`tick`] fails.
pub fn exceed(e: Exceeded) {
    STATE.with(|s| {
        if s.armed.get() {
            let _ = fail(s, e);
        }
    })
}

/// Whether a budget is armed on this thread.
pub fn armed() -> bool {
    STATE.with(|s| s.armed.get())
}

/// The limit the current evaluation ran into, if any.
pub fn exceeded() -> Option<Exceeded> {
    STATE.with(|s| s.exceeded.get())
}

/// The error a term returns once a limit was exceeded.
pub fn error<V>(e: Exceeded) -> crate::Error<V> {
    let msg = match e {
        Exceeded::Fuel => "jq fuel budget exceeded",
        Exceeded::Stack => "jq nesting budget exceeded",
        Exceeded::Memory => "jq memory budget exceeded",
        Exceeded::Cancelled => "jq evaluation cancelled",
    };
    core::iter::once(crate::exn::Part::Str(msg)).collect()
}
