//! Given two images, a patch rebuilds the new one from the old one and from nothing else.

use fota_delta::{DeltaError, ENVELOPE_LEN, Envelope, applier_ram, apply_patch, make_patch};

/// A pseudo-firmware: code-like bytes with a change in the middle and a tail appended.
fn images() -> (Vec<u8>, Vec<u8>) {
    let old: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut new = old.clone();
    new[40_000..40_100]
        .iter_mut()
        .for_each(|b| *b = b.wrapping_add(7));
    new.extend_from_slice(b"version 2 tail");
    (old, new)
}

#[test]
fn patch_round_trips_and_is_small() {
    let (old, new) = images();
    let patch = make_patch(&old, &new);
    assert_eq!(apply_patch(&old, &patch).unwrap(), new);
    assert!(
        patch.len() < 1_000,
        "patch of a 100-byte change is {} bytes",
        patch.len()
    );
}

#[test]
fn envelope_describes_both_images() {
    let (old, new) = images();
    let patch = make_patch(&old, &new);
    let (envelope, _) = Envelope::parse(&patch).unwrap();
    assert_eq!(envelope, Envelope::describe(envelope.algorithm, &old, &new));
}

#[test]
fn patch_is_refused_on_the_wrong_base() {
    let (old, new) = images();
    let patch = make_patch(&old, &new);
    let mut other = old.clone();
    other[5] ^= 1;
    assert_eq!(
        apply_patch(&other, &patch),
        Err(DeltaError::WrongBase("sha256 differs"))
    );
    assert_eq!(
        apply_patch(&old[1..], &patch),
        Err(DeltaError::WrongBase("size differs"))
    );
}

#[test]
fn damaged_patch_is_refused() {
    let (old, new) = images();
    let patch = make_patch(&old, &new);
    assert_eq!(apply_patch(&old, &patch[1..]), Err(DeltaError::BadMagic));
    let truncated = &patch[..patch.len() - 3];
    assert!(matches!(
        apply_patch(&old, truncated),
        Err(DeltaError::Corrupt(_))
    ));
    let mut wrong_result = patch.clone();
    wrong_result[ENVELOPE_LEN - 1] ^= 1;
    assert_eq!(
        apply_patch(&old, &wrong_result),
        Err(DeltaError::ResultMismatch("sha256 differs"))
    );
}

#[test]
fn applier_ram_does_not_grow_with_the_image() {
    let (old, new) = images();
    let small = applier_ram(&make_patch(&old, &new)).unwrap();
    let (old4, new4) = (old.repeat(4), new.repeat(4));
    let large = applier_ram(&make_patch(&old4, &new4)).unwrap();
    assert_eq!(small, large, "RAM grew from {small} to {large} bytes");
    assert!(large < 96 * 1024, "applier needs {large} bytes");
}
