//! Xyn patch: the nesting depth of values built during an evaluation is bounded.
//!
//! Values are dropped, compared and printed recursively, so a value nested 200,000 levels deep
//! (`reduce range(200000) as $i (null; [.])`) overflows the stack wherever it is dropped.
//! Arrays and objects built by the evaluator (`[…]`, `{…}`) check the depth of their elements
//! and mark the evaluation budget exceeded when it passes [`MAX_DEPTH`], so the next step of the
//! evaluation fails before anything deeper is built. Depths of nested containers are memoised
//! by address with a `Weak` reference (which keeps the address from being reused while the
//! entry exists); flat containers are scanned, and the scan is paid for with fuel.

use crate::{Rc, Val};
use alloc::vec::Vec;
use core::cell::RefCell;

/// The deepest value an evaluation may build.
pub const MAX_DEPTH: usize = 1_000;

#[cfg(not(feature = "sync"))]
type Weak<T> = alloc::rc::Weak<T>;
#[cfg(feature = "sync")]
type Weak<T> = alloc::sync::Weak<T>;

enum Node {
    Arr(Weak<Vec<Val>>),
    Obj(Weak<crate::Map<Val, Val>>),
}

impl Node {
    fn alive(&self) -> bool {
        match self {
            Node::Arr(w) => w.strong_count() > 0,
            Node::Obj(w) => w.strong_count() > 0,
        }
    }
}

struct Memo {
    map: std::collections::HashMap<usize, (Node, usize)>,
    prune_at: usize,
}

std::thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo {
        map: std::collections::HashMap::new(),
        prune_at: 1024,
    });
}

/// Forgets every memoised depth (call after an evaluation).
pub fn clear() {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        m.map = std::collections::HashMap::new();
        m.prune_at = 1024;
    });
}

fn key(v: &Val) -> Option<usize> {
    match v {
        Val::Arr(a) => Some(Rc::as_ptr(a) as *const u8 as usize),
        Val::Obj(o) => Some(Rc::as_ptr(o) as *const u8 as usize),
        _ => None,
    }
}

/// The depth of `v` (0 for scalars), at most `MAX_DEPTH + 1`.
fn depth(v: &Val) -> usize {
    let Some(k) = key(v) else { return 0 };
    if let Some(d) = MEMO.with(|m| m.borrow().map.get(&k).filter(|(n, _)| n.alive()).map(|e| e.1)) {
        return d;
    }
    // Iterative: the children first, then the node.
    let mut stack: Vec<(&Val, bool)> = Vec::from([(v, false)]);
    let mut computed: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut result = 0;
    while let Some((v, done)) = stack.pop() {
        let Some(k) = key(v) else { continue };
        let children: Vec<&Val> = match v {
            Val::Arr(a) => a.iter().collect(),
            Val::Obj(o) => o.iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        let known = |c: &&Val| -> Option<usize> {
            match key(c) {
                None => Some(0),
                Some(ck) => computed.get(&ck).copied().or_else(|| {
                    MEMO.with(|m| m.borrow().map.get(&ck).filter(|(n, _)| n.alive()).map(|e| e.1))
                }),
            }
        };
        if !done {
            stack.push((v, true));
            for c in &children {
                if known(c).is_none() {
                    stack.push((c, false));
                }
            }
            if stack.len() > MAX_DEPTH * 64 {
                return MAX_DEPTH + 1;
            }
            continue;
        }
        jaq_core::budget::charge_fuel(children.len() as u64);
        let d = 1 + children.iter().map(|c| known(c).unwrap_or(0)).max().unwrap_or(0);
        computed.insert(k, d);
        remember(v, d);
        result = d;
        if d > MAX_DEPTH {
            return d;
        }
    }
    result
}

fn remember(v: &Val, d: usize) {
    let (Some(k), node) = (key(v), match v {
        Val::Arr(a) => Some(Node::Arr(Rc::downgrade(a))),
        Val::Obj(o) => Some(Node::Obj(Rc::downgrade(o))),
        _ => None,
    }) else {
        return;
    };
    let Some(node) = node else { return };
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        m.map.insert(k, (node, d));
        if m.map.len() >= m.prune_at {
            m.map.retain(|_, (n, _)| n.alive());
            m.prune_at = (m.map.len() * 2).max(1024);
        }
    });
}

/// Checks a container just built from `children`; marks the budget exceeded when too deep.
pub(crate) fn check<'a>(built: &Val, children: impl Iterator<Item = &'a Val>) {
    let mut max = 0;
    let mut n = 0u64;
    for c in children {
        n += 1;
        if key(c).is_some() {
            max = max.max(depth(c));
        }
    }
    jaq_core::budget::charge_fuel(n);
    let d = max + 1;
    if d > MAX_DEPTH {
        jaq_core::budget::exceed(jaq_core::budget::Exceeded::Stack);
    } else if d >= 2 {
        remember(built, d);
    }
}
