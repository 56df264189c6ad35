//! Raw pointers to checked slices and typed values, and the output-buffer rules, written
//! once.

use std::ffi::c_void;

use cryptoki_sys as ck;
use cryptoki_sys::{CK_ATTRIBUTE, CK_MECHANISM, CK_ULONG};

use crate::attributes::Attr;
use crate::error::{Error, Result};
use crate::mechanisms::{Mechanism, ParamKind, RawOaep, RawParams, RawPss, param_kind};

fn to_usize(len: CK_ULONG) -> Result<usize> {
    usize::try_from(len).map_err(|_| Error::ArgumentsBad)
}

fn to_ulong(len: usize) -> Result<CK_ULONG> {
    CK_ULONG::try_from(len).map_err(|_| Error::General("length overflow".into()))
}

/// `len` bytes at `ptr` (NULL allowed for an empty input).
///
/// # Safety
///
/// `ptr` is NULL or valid for reads of `len` bytes for `'a`.
pub unsafe fn bytes<'a>(ptr: *const u8, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = to_usize(len)?;
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `len` values at `ptr` for writing.
///
/// # Safety
///
/// `ptr` is NULL or valid for writes of `len` values for `'a`.
pub unsafe fn slice_mut<'a, T>(ptr: *mut T, len: CK_ULONG) -> Result<&'a mut [T]> {
    let len = to_usize(len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null, and the caller guarantees `len` writable values.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// The value behind an output pointer.
///
/// # Safety
///
/// `ptr` is NULL or valid for reads and writes of one `T` for `'a`.
pub unsafe fn out<'a, T>(ptr: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller guarantees validity if non-null.
    unsafe { ptr.as_mut() }.ok_or(Error::ArgumentsBad)
}

/// A template (`CK_ATTRIBUTE` array) as owned attributes.
///
/// # Safety
///
/// `ptr` is NULL or valid for reads of `count` attributes whose values are valid for
/// reads of their lengths.
pub unsafe fn template(ptr: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Vec<Attr>> {
    let count = to_usize(count)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null, `count` readable attributes.
    let raw = unsafe { std::slice::from_raw_parts(ptr, count) };
    raw.iter()
        .map(|a| {
            // SAFETY: the caller guarantees each value is readable for its length.
            let value = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
            Ok(Attr {
                kind: a.type_,
                value: value.to_vec(),
            })
        })
        .collect()
}

/// A parameter structure of exactly its size.
///
/// # Safety
///
/// `ptr` is NULL or valid for reads of `len` bytes.
unsafe fn param<T: Copy>(ptr: *const c_void, len: CK_ULONG) -> Result<T> {
    if ptr.is_null() || to_usize(len)? != size_of::<T>() {
        return Err(Error::MechanismParamInvalid);
    }
    // SAFETY: non-null and `size_of::<T>()` readable bytes; read_unaligned tolerates
    // any alignment the application used.
    Ok(unsafe { std::ptr::read_unaligned(ptr.cast::<T>()) })
}

/// The type of a `CK_MECHANISM`, its parameter ignored (key generation takes none).
///
/// # Safety
///
/// `ptr` is NULL or a valid mechanism.
pub unsafe fn mechanism_type(ptr: *const CK_MECHANISM) -> Result<ck::CK_MECHANISM_TYPE> {
    // SAFETY: the caller guarantees validity if non-null.
    let m = unsafe { ptr.as_ref() }.ok_or(Error::ArgumentsBad)?;
    Ok(m.mechanism)
}

/// A `CK_MECHANISM` as a typed [`Mechanism`].
///
/// # Safety
///
/// `ptr` is NULL or a valid mechanism whose parameter is valid for its length.
pub unsafe fn mechanism(ptr: *const CK_MECHANISM) -> Result<Mechanism> {
    // SAFETY: the caller guarantees validity if non-null.
    let m = unsafe { ptr.as_ref() }.ok_or(Error::ArgumentsBad)?;
    let params = match param_kind(m.mechanism) {
        ParamKind::None => RawParams::None,
        ParamKind::Pss => {
            // SAFETY: as guaranteed by the caller.
            let p: ck::CK_RSA_PKCS_PSS_PARAMS = unsafe { param(m.pParameter, m.ulParameterLen) }?;
            RawParams::Pss(RawPss {
                hash: p.hashAlg,
                mgf: p.mgf,
                salt_len: p.sLen,
            })
        }
        ParamKind::Oaep => {
            // SAFETY: as guaranteed by the caller.
            let p: ck::CK_RSA_PKCS_OAEP_PARAMS = unsafe { param(m.pParameter, m.ulParameterLen) }?;
            let label = match p.source {
                ck::CKZ_DATA_SPECIFIED => {
                    // SAFETY: the label is valid for its length, as the caller guarantees.
                    unsafe { bytes(p.pSourceData as *const u8, p.ulSourceDataLen) }
                        .map_err(|_| Error::MechanismParamInvalid)?
                        .to_vec()
                }
                0 => Vec::new(),
                _ => return Err(Error::MechanismParamInvalid),
            };
            RawParams::Oaep(RawOaep {
                hash: p.hashAlg,
                mgf: p.mgf,
                label,
            })
        }
    };
    Mechanism::parse(m.mechanism, params)
}

/// The variable-length output rule, for every function that returns bytes: a NULL buffer
/// asks for the length (`expected`, computed without starting any network operation); a
/// buffer shorter than that gets `CKR_BUFFER_TOO_SMALL` with the length set and the
/// operation kept; otherwise `produce` runs (ending the operation) and its output is
/// copied.
///
/// # Safety
///
/// `buf` is NULL or valid for writes of `*len` bytes; `len` is NULL or valid.
pub unsafe fn output<T: AsRef<[u8]>>(
    buf: *mut u8,
    len: *mut CK_ULONG,
    expected: impl FnOnce() -> Result<usize>,
    produce: impl FnOnce() -> Result<T>,
) -> Result<()> {
    // SAFETY: as guaranteed by the caller.
    let len = unsafe { out(len) }?;
    let needed = expected()?;
    if buf.is_null() {
        *len = to_ulong(needed)?;
        return Ok(());
    }
    if to_usize(*len)? < needed {
        *len = to_ulong(needed)?;
        return Err(Error::BufferTooSmall);
    }
    let data = produce()?;
    let data = data.as_ref();
    // SAFETY: `buf` is valid for `*len >= needed >= data.len()` bytes.
    let dst = unsafe { slice_mut(buf, *len) }?;
    let dst = dst.get_mut(..data.len()).ok_or(Error::BufferTooSmall)?;
    dst.copy_from_slice(data);
    *len = to_ulong(data.len())?;
    Ok(())
}

/// The same rule for lists of values (slots, mechanisms).
///
/// # Safety
///
/// `buf` is NULL or valid for writes of `*count` values; `count` is NULL or valid.
pub unsafe fn list<T: Copy>(buf: *mut T, count: *mut CK_ULONG, items: &[T]) -> Result<()> {
    // SAFETY: as guaranteed by the caller.
    let count = unsafe { out(count) }?;
    if buf.is_null() {
        *count = to_ulong(items.len())?;
        return Ok(());
    }
    if to_usize(*count)? < items.len() {
        *count = to_ulong(items.len())?;
        return Err(Error::BufferTooSmall);
    }
    // SAFETY: as guaranteed by the caller.
    let dst = unsafe { slice_mut(buf, *count) }?;
    for (d, s) in dst.iter_mut().zip(items) {
        *d = *s;
    }
    *count = to_ulong(items.len())?;
    Ok(())
}

/// A string blank-padded to a fixed-size PKCS#11 field.
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut field = [b' '; N];
    for (d, b) in field.iter_mut().zip(s.bytes()) {
        *d = b;
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_query_and_a_short_buffer_never_produce() {
        let mut len: CK_ULONG = 0;
        // SAFETY: NULL buffer, valid length pointer.
        let r = unsafe {
            output(
                std::ptr::null_mut(),
                &mut len,
                || Ok(256),
                || -> Result<Vec<u8>> { panic!("a length query must not produce") },
            )
        };
        assert_eq!((r, len), (Ok(()), 256));
        let mut buf = [0u8; 10];
        len = 10;
        // SAFETY: `buf` holds `len` bytes.
        let r = unsafe {
            output(
                buf.as_mut_ptr(),
                &mut len,
                || Ok(256),
                || -> Result<Vec<u8>> { panic!("a short buffer must not produce") },
            )
        };
        assert_eq!((r, len), (Err(Error::BufferTooSmall), 256));
        let mut big = [0u8; 300];
        len = 300;
        // SAFETY: `big` holds `len` bytes.
        let r = unsafe {
            output(
                big.as_mut_ptr(),
                &mut len,
                || Ok(256),
                || Ok(vec![7u8; 200]),
            )
        };
        assert_eq!((r, len), (Ok(()), 200));
        assert_eq!(big[199], 7);
        // SAFETY: NULL length pointer is refused before anything is read.
        let r = unsafe {
            output(
                big.as_mut_ptr(),
                std::ptr::null_mut(),
                || Ok(1),
                || Ok(vec![1]),
            )
        };
        assert_eq!(r, Err(Error::ArgumentsBad));
    }

    #[test]
    fn lists_follow_the_same_rule() {
        let mut count: CK_ULONG = 0;
        // SAFETY: NULL buffer, valid count.
        assert_eq!(
            unsafe { list::<u64>(std::ptr::null_mut(), &mut count, &[1, 2, 3]) },
            Ok(())
        );
        assert_eq!(count, 3);
        let mut buf = [0u64; 2];
        count = 2;
        // SAFETY: `buf` holds `count` values.
        let r = unsafe { list(buf.as_mut_ptr(), &mut count, &[1u64, 2, 3]) };
        assert_eq!((r, count), (Err(Error::BufferTooSmall), 3));
    }

    #[test]
    fn padded_fields_are_blank_filled_and_cut() {
        assert_eq!(&padded::<6>("ab"), b"ab    ");
        assert_eq!(&padded::<2>("abcd"), b"ab");
    }
}
