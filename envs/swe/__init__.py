"""Software-engineering agents: SWE-bench-format tasks over local git checkouts, sandboxed test runs."""
