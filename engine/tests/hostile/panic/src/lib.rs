//! A policy that panics (a trap): the error must carry its panic message.

hostile_policy::decide!(|device, _| {
    panic!("hostile plugin gave up on {}", device.endpoint)
});
