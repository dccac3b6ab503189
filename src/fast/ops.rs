//! Rhai's operators on unboxed numbers, computing exactly Rhai's values. Where Rhai raises an error
//! the operation answers `None`: the call is then run again in Rhai, which raises the very error
//! Rhai raises (message, position, call chain), so nothing here has to copy error texts.

/// `x + y` and friends on integers: `None` where Rhai reports overflow or division by zero.
pub(crate) fn int_div(x: i64, y: i64) -> Option<i64> {
    if y == 0 { None } else { x.checked_div(y) }
}

pub(crate) fn int_pow(x: i64, y: i64) -> Option<i64> {
    if !(0..=u32::MAX as i64).contains(&y) {
        return None;
    }
    x.checked_pow(y as u32)
}

/// Rhai's `<<`: a negative amount shifts the other way, amounts past the width give 0.
pub(crate) fn shift_left(x: i64, y: i64) -> i64 {
    if y > u32::MAX as i64 {
        0
    } else if y < 0 {
        shift_right(x, y.checked_abs().unwrap_or(i64::MAX))
    } else {
        x.checked_shl(y as u32).unwrap_or(0)
    }
}

/// Rhai's `>>`: arithmetic, with the same rules for odd amounts as `<<`.
pub(crate) fn shift_right(x: i64, y: i64) -> i64 {
    if y > u32::MAX as i64 {
        x.wrapping_shr(u32::MAX)
    } else if y < 0 {
        shift_left(x, y.checked_abs().unwrap_or(i64::MAX))
    } else {
        x.checked_shr(y as u32)
            .unwrap_or_else(|| x.wrapping_shr(u32::MAX))
    }
}

/// Rhai compares floats relative to their size (so `0.1 + 0.2 == 0.3`); `max` is the scale.
fn scale(x: f64, y: f64) -> f64 {
    if x * y == 0.0 {
        1.0
    } else {
        x.abs().max(y.abs())
    }
}

pub(crate) fn float_eq(x: f64, y: f64) -> bool {
    let max = scale(x, y);
    max == 0.0 || (x - y).abs() / max <= f64::EPSILON
}

pub(crate) fn float_ne(x: f64, y: f64) -> bool {
    let max = scale(x, y);
    max != 0.0 && (x - y).abs() / max > f64::EPSILON
}

pub(crate) fn float_gt(x: f64, y: f64) -> bool {
    let max = scale(x, y);
    max != 0.0 && (x - y) / max > f64::EPSILON
}

pub(crate) fn float_ge(x: f64, y: f64) -> bool {
    let max = scale(x, y);
    max == 0.0 || (x - y) / max > -f64::EPSILON
}

pub(crate) fn float_lt(x: f64, y: f64) -> bool {
    let max = scale(x, y);
    max != 0.0 && (y - x) / max > f64::EPSILON
}

pub(crate) fn float_le(x: f64, y: f64) -> bool {
    let max = scale(x, y);
    max == 0.0 || (y - x) / max > -f64::EPSILON
}

/// Rhai's `to_int` on a float: truncates; out of range is an error.
pub(crate) fn float_to_int(x: f64) -> Option<i64> {
    if x > (i64::MAX as f64) || x < (i64::MIN as f64) {
        None
    } else {
        Some(x.trunc() as i64)
    }
}

/// Where `index` falls in an array of `len` elements, as Rhai counts: from the end when negative
/// (`-1` is the last); `None` where Rhai reports the index out of bounds.
pub(crate) fn element_at(len: usize, index: i64) -> Option<usize> {
    if index < 0 {
        let back = usize::try_from(index.unsigned_abs()).ok()?;
        len.checked_sub(back)
    } else {
        usize::try_from(index).ok().filter(|&at| at < len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_comparisons_are_relative_like_rhai() {
        assert!(float_eq(0.1 + 0.2, 0.3));
        assert!(!float_ne(0.1 + 0.2, 0.3));
        assert!(!float_eq(f64::NAN, f64::NAN));
        assert!(float_eq(0.0, -0.0));
        assert!(float_lt(1.0, 2.0) && !float_lt(2.0, 1.0));
        assert!(float_le(1.0, 1.0) && float_ge(1.0, 1.0));
    }

    #[test]
    fn shifts_follow_rhai_for_odd_amounts() {
        assert_eq!(shift_left(1, 64), 0);
        assert_eq!(shift_left(8, -2), 2);
        assert_eq!(shift_right(-8, 100), -1);
        assert_eq!(shift_right(1, -3), 8);
        assert_eq!(shift_left(1, i64::MIN), 0);
    }

    #[test]
    fn failing_integer_operations_answer_none() {
        assert_eq!(int_div(i64::MIN, -1), None);
        assert_eq!(int_div(1, 0), None);
        assert_eq!(int_pow(2, -1), None);
        assert_eq!(int_pow(2, 63), None);
        assert_eq!(int_pow(-2, 63), Some(i64::MIN));
        assert_eq!(float_to_int(1e19), None);
        assert_eq!(float_to_int(-2.7), Some(-2));
    }
}
