//! Rule 7: the semaphore protocol. A token-only dry run of the four queues proves the program
//! cannot deadlock and no counter exceeds its maximum under any timing.

#![deny(clippy::arithmetic_side_effects)]

use crate::fields::{Engine, Sem};
use crate::inst::{Inst, Op, Route};
use crate::program::Program;

use super::*;

/// Tokens an instruction takes from and gives to each semaphore.
#[derive(Clone, Debug, Default)]
pub(super) struct Tokens {
    pub(super) take: Vec<(Sem, u32)>,
    pub(super) give: Vec<(Sem, u32)>,
}

pub(super) fn add_tokens(list: &mut Vec<(Sem, u32)>, sem: Sem, n: u32) {
    match list.iter_mut().find(|(s, _)| *s == sem) {
        Some((_, count)) => *count = count.saturating_add(n),
        None => list.push((sem, n)),
    }
}

pub(super) fn tokens(inst: &Inst) -> Tokens {
    let mut t = Tokens::default();
    for sem in inst.sync.wait.iter().flatten() {
        add_tokens(&mut t.take, *sem, 1);
    }
    match inst.op {
        Op::SemWait(it) => add_tokens(&mut t.take, it.sem, it.count.into()),
        Op::SemSignal(it) => add_tokens(&mut t.give, it.sem, it.count.into()),
        _ => {}
    }
    for sem in inst.sync.signal.iter().flatten() {
        add_tokens(&mut t.give, *sem, 1);
    }
    t
}

/// One queued instruction as the dry run sees it.
pub(super) struct Step {
    pub(super) inst: usize,
    /// Front-end instructions before it: it may start only when every queued instruction of
    /// an earlier epoch has completed.
    pub(super) epoch: usize,
    pub(super) tokens: Tokens,
}

/// The token-only dry run.
///
/// Each semaphore has one consuming queue and queues are in order, so the program is a Kahn
/// process network: whether it completes does not depend on timing. For the overflow check,
/// the dry run is repeated once per consuming queue with that queue held back as long as
/// possible while every other queue runs as far as it can; that schedule reaches the largest
/// value each of the held queue's semaphores can take under any timing (progress is monotone).
pub(super) fn dry_run(program: &Program) -> Result<[u8; Sem::COUNT], VerifyError> {
    let mut queues: [Vec<Step>; 4] = Default::default();
    let mut barriers = Vec::new();
    // For each semaphore, the queues that wait on it with the first instruction of each.
    let mut consumers: [Vec<(Engine, usize)>; Sem::COUNT] = Default::default();
    for (index, inst) in program.insts.iter().enumerate() {
        match inst.op.route() {
            Route::Front => barriers.push(index),
            Route::Engine(e) => {
                let tokens = tokens(inst);
                for (sem, _) in &tokens.take {
                    let list = &mut consumers[sem.index()];
                    if !list.iter().any(|(q, _)| *q == e) {
                        list.push((e, index));
                    }
                }
                queues[e as usize].push(Step { inst: index, epoch: barriers.len(), tokens });
            }
        }
    }
    for (n, list) in (0u8..).zip(&consumers) {
        if let (Some(sem), [_, (_, second), ..]) = (Sem::new(n), list.as_slice()) {
            let inst = &program.insts[*second];
            return Err(VerifyError {
                at: Location::Inst { index: *second, mnemonic: Some(inst.op.mnemonic()) },
                kind: ErrorKind::SharedSem { sem, engines: list.iter().map(|(e, _)| *e).collect() },
            });
        }
    }
    let mut held: Vec<Option<Engine>> = Engine::ALL
        .iter()
        .filter(|e| consumers.iter().any(|c| c.iter().any(|(q, _)| q == *e)))
        .map(|e| Some(*e))
        .collect();
    if held.is_empty() {
        held.push(None);
    }
    let mut peak = program.sem_init;
    for hold in held {
        run_schedule(program, &queues, &barriers, hold, &mut peak)?;
    }
    Ok(peak)
}

pub(super) fn run_schedule(
    program: &Program,
    queues: &[Vec<Step>; 4],
    barriers: &[usize],
    hold: Option<Engine>,
    peak: &mut [u8; Sem::COUNT],
) -> Result<(), VerifyError> {
    let mut sems: [u32; Sem::COUNT] = program.sem_init.map(u32::from);
    let mut pos = [0usize; 4];
    let epoch_of =
        |e: usize, pos: &[usize; 4]| queues[e].get(pos[e]).map_or(usize::MAX, |s| s.epoch);
    // Whether queue `e` can start its head instruction.
    let ready = |e: usize, pos: &[usize; 4], sems: &[u32; Sem::COUNT]| -> bool {
        let Some(step) = queues[e].get(pos[e]) else {
            return false;
        };
        let earliest = (0..4).map(|q| epoch_of(q, pos)).min().unwrap_or(usize::MAX);
        step.epoch <= earliest && step.tokens.take.iter().all(|(s, n)| sems[s.index()] >= *n)
    };
    let mut step =
        |e: usize, pos: &mut [usize; 4], sems: &mut [u32; Sem::COUNT]| -> Result<(), VerifyError> {
            let s = &queues[e][pos[e]];
            for (sem, n) in &s.tokens.take {
                let v = &mut sems[sem.index()];
                *v = v.saturating_sub(*n);
            }
            for (sem, n) in &s.tokens.give {
                let v = &mut sems[sem.index()];
                *v = v.saturating_add(*n);
                if *v > SEM_MAX {
                    let inst = &program.insts[s.inst];
                    return Err(VerifyError {
                        at: Location::Inst { index: s.inst, mnemonic: Some(inst.op.mnemonic()) },
                        kind: ErrorKind::SemOverflow { sem: *sem, value: *v },
                    });
                }
                let p = &mut peak[sem.index()];
                *p = (*p).max(u8::try_from(*v).unwrap_or(u8::MAX));
            }
            pos[e] = pos[e].saturating_add(1);
            Ok(())
        };
    let held = hold.map(|e| e as usize);
    loop {
        // Run every queue but the held one as far as it can go.
        let mut progress = true;
        while progress {
            progress = false;
            for e in (0..4).filter(|e| Some(*e) != held) {
                while ready(e, &pos, &sems) {
                    step(e, &mut pos, &mut sems)?;
                    progress = true;
                }
            }
        }
        match held {
            Some(h) if ready(h, &pos, &sems) => step(h, &mut pos, &mut sems)?,
            _ => break,
        }
    }
    if (0..4).all(|e| pos[e] == queues[e].len()) {
        return Ok(());
    }
    let earliest = (0..4).map(|q| epoch_of(q, &pos)).min().unwrap_or(usize::MAX);
    let mut blocked = Vec::new();
    for (e, engine) in Engine::ALL.iter().enumerate() {
        let Some(s) = queues[e].get(pos[e]) else {
            continue;
        };
        let on = if s.epoch > earliest {
            BlockedOn::Barrier(barriers.get(s.epoch.saturating_sub(1)).copied().unwrap_or(0))
        } else {
            // A queue that is not behind a barrier and not ready lacks tokens somewhere.
            let Some((sem, need)) =
                s.tokens.take.iter().find(|(sem, n)| sems[sem.index()] < *n).copied()
            else {
                continue;
            };
            BlockedOn::Sem { sem, have: sems[sem.index()], need }
        };
        blocked.push(Blocked { engine: *engine, inst: s.inst, on });
    }
    Err(VerifyError { at: Location::Program, kind: ErrorKind::Deadlock(blocked) })
}
