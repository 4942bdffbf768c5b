//! A policy whose skip reason is 8 MiB: the host must refuse the oversized answer.

use fota::plugin::types::{Skip, SkipReason};

hostile_policy::decide!(|_, _| {
    Decision::Skip(Skip {
        why: SkipReason::NotSupported,
        reason: "x".repeat(8 << 20),
    })
});
