//! A policy that allocates until it is stopped: the memory limit must stop it.

hostile_policy::decide!(|_, _| {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
});
