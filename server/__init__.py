"""amtrace central server: requalification, release gate, designs, jobs, device codes, audit trail."""
