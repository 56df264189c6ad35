//! Any byte string as a [`Case`]: the fuzz target's input.

use cryptoki_sys::*;

use super::{Case, Handle, Object, Op, Out, Pin, SLOT, Template};

/// The most calls of one decoded case, all its threads together.
pub const MAX_OPS: usize = 32;

/// Turns any byte string into a case: never panics, never more than [`MAX_OPS`] calls.
///
/// The first byte chooses 1–4 threads (bits 0–1), which of them log in first (bits 2–5)
/// and whether one thread forks (bit 6); the second byte where it forks. Then each call
/// takes a byte for its function and a few for its arguments, and goes to the threads in
/// turn. Bytes past the end read as zero; the calls end with the bytes.
pub fn decode(bytes: &[u8]) -> Case {
    let mut c = Choices(bytes);
    let head = c.byte();
    let fork_at = usize::from(c.byte());
    let count = 1 + usize::from(head & 3);
    let mut threads: Vec<(bool, Vec<Op>)> = (0..count)
        .map(|i| ((head >> (2 + i)) & 1 == 1, Vec::new()))
        .collect();
    let mut made = 0;
    while !c.0.is_empty() && made < MAX_OPS {
        let op = c.op();
        if let Some((_, ops)) = threads.get_mut(made % count) {
            ops.push(op);
        }
        made += 1;
    }
    let fork = match threads.as_slice() {
        [(_, ops)] if head & 0x40 != 0 => Some(fork_at % (ops.len() + 1)),
        _ => None,
    };
    Case { threads, fork }
}

/// The choices of [`decode`], read from bytes; past their end every byte reads as zero.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// A number below `n` (1 ≤ n ≤ 256).
    fn below(&mut self, n: u16) -> u16 {
        u16::from(self.byte()) % n.max(1)
    }

    fn one_in(&mut self, n: u16) -> bool {
        self.below(n) == 0
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// A length below `n`, from two bytes.
    fn len(&mut self, n: u16) -> usize {
        usize::from(u16::from_le_bytes([self.byte(), self.byte()]) % n.max(1))
    }

    /// Zero, a small number or any.
    fn number(&mut self) -> u64 {
        match self.below(4) {
            0 => 0,
            1 | 2 => u64::from(self.below(64)),
            _ => self.u64(),
        }
    }

    fn handle(&mut self) -> Handle {
        match self.below(8) {
            0..=5 => Handle::Open(usize::from(self.byte())),
            6 => Handle::Stale(usize::from(self.byte())),
            _ => Handle::Random(self.number()),
        }
    }

    fn object(&mut self) -> Object {
        match self.below(8) {
            0..=2 => Object::Private,
            3 | 4 => Object::Public,
            5 | 6 => Object::Found(usize::from(self.byte())),
            _ => Object::Random(self.number()),
        }
    }

    fn out(&mut self) -> Out {
        match self.below(4) {
            0 => Out::Null,
            1 => Out::Short(usize::from(self.below(8))),
            _ => Out::Large,
        }
    }

    fn outs(&mut self) -> Vec<Out> {
        let n = 1 + self.below(3);
        (0..n).map(|_| self.out()).collect()
    }

    fn slot(&mut self) -> CK_SLOT_ID {
        if self.one_in(5) { self.u64() } else { SLOT }
    }

    fn attribute(&mut self) -> CK_ATTRIBUTE_TYPE {
        match self.below(9) {
            0 => CKA_CLASS,
            1 => CKA_LABEL,
            2 => CKA_ID,
            3 => CKA_MODULUS,
            4 => CKA_PUBLIC_EXPONENT,
            5 => CKA_PRIVATE_EXPONENT,
            6 => CKA_SENSITIVE,
            7 => CKA_VALUE,
            _ => self.u64(),
        }
    }

    fn mechanism(&mut self) -> CK_MECHANISM_TYPE {
        match self.below(8) {
            0 => CKM_RSA_PKCS,
            1 => CKM_SHA256_RSA_PKCS,
            2 => CKM_RSA_PKCS_PSS,
            3 => CKM_SHA256_RSA_PKCS_PSS,
            4 => CKM_RSA_PKCS_OAEP,
            5 => CKM_RSA_X_509,
            6 => CKM_AES_CBC,
            _ => self.u64(),
        }
    }

    fn op(&mut self) -> Op {
        match self.below(19) {
            0 => Op::OpenSession {
                flags: match self.below(5) {
                    0 => CKF_SERIAL_SESSION | CKF_RW_SESSION,
                    1 => CKF_SERIAL_SESSION,
                    2 => CKF_RW_SESSION,
                    3 => 0,
                    _ => self.u64(),
                },
                null_out: self.one_in(10),
            },
            1 => Op::CloseSession(self.handle()),
            2 => Op::CloseAllSessions(if self.one_in(5) { SLOT } else { SLOT + 1000 }),
            3 => Op::GetSessionInfo {
                session: self.handle(),
                null: self.one_in(2),
            },
            4 => Op::GetSlotInfo {
                slot: self.slot(),
                null: self.one_in(2),
            },
            5 => Op::GetTokenInfo {
                slot: self.slot(),
                null: self.one_in(2),
            },
            6 => Op::Login {
                session: self.handle(),
                user: match self.below(7) {
                    0..=3 => CKU_USER,
                    4 => CKU_SO,
                    5 => CKU_CONTEXT_SPECIFIC,
                    _ => 7,
                },
                pin: match self.below(6) {
                    0..=3 => Pin::Right,
                    4 => Pin::Wrong,
                    _ => Pin::NullWithLen,
                },
            },
            7 => Op::Logout(self.handle()),
            8 => Op::FindObjectsInit {
                session: self.handle(),
                template: match self.below(5) {
                    0 => Template::Empty,
                    1 => Template::NullWithCount(1 + u64::from(self.below(3))),
                    2 => Template::Class(match self.below(3) {
                        0 => CKO_PRIVATE_KEY,
                        1 => CKO_PUBLIC_KEY,
                        _ => self.u64(),
                    }),
                    3 => Template::KeyId,
                    _ => Template::NullValue(self.attribute()),
                },
            },
            9 => Op::FindObjects {
                session: self.handle(),
                max: u64::from(self.below(4)),
                null_out: self.one_in(5),
                null_count: self.one_in(5),
            },
            10 => Op::FindObjectsFinal(self.handle()),
            11 => Op::GetAttributeValue {
                session: self.handle(),
                object: self.object(),
                kind: self.attribute(),
                out: self.out(),
            },
            12 => Op::SignInit {
                session: self.handle(),
                mechanism: self.mechanism(),
                null_params: self.one_in(3),
                key: self.object(),
            },
            13 => Op::Sign {
                session: self.handle(),
                len: self.len(300),
                out: self.out(),
            },
            14 => Op::DecryptInit {
                session: self.handle(),
                mechanism: self.mechanism(),
                null_params: self.one_in(3),
                key: self.object(),
            },
            15 => Op::Decrypt {
                session: self.handle(),
                len: if self.one_in(2) { 256 } else { self.len(300) },
                out: self.out(),
            },
            16 => Op::SignWith {
                session: self.handle(),
                outs: self.outs(),
            },
            17 => Op::DecryptWith {
                session: self.handle(),
                outs: self.outs(),
            },
            _ => Op::GenerateRandom {
                session: self.handle(),
                len: u64::from(self.below(64)),
                null: self.one_in(5),
            },
        }
    }
}
