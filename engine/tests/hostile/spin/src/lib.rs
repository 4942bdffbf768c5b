//! A policy whose decide never returns: the time limit must stop it.

hostile_policy::decide!(|_, _| {
    loop {
        std::hint::black_box(());
    }
});
