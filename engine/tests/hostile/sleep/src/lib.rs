//! A policy whose decide sleeps for an hour: it uses no CPU time, so only a bound on the
//! call's wall time, enforced while it waits, stops it.

hostile_policy::decide!(|_, _| {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    Decision::Go
});
