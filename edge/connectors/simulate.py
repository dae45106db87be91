"""What every protocol's simulator shares: which machine file it plays, chosen by id and checked for its protocol."""

from __future__ import annotations

import argparse

from edge.config import ConfigError, MachineConfig, load_machine


def add_machine_arguments(p: argparse.ArgumentParser, protocol: str) -> None:
    """--machine and --machines-dir for `amtrace-edge simulate <protocol>`."""
    p.add_argument("--machine", required=True, help=f"machine id (a file with connection type {protocol})")
    p.add_argument("--machines-dir", default="configs/machines", help="folder of machine files")


def machine_to_simulate(args: argparse.Namespace, protocol: str) -> MachineConfig:
    """The machine file named by the arguments; ConfigError when it is invalid or of another protocol."""
    machine = load_machine(f"{args.machines_dir}/{args.machine}.yaml")
    if machine.connection.type != protocol:
        raise ConfigError(f"machine {machine.id}: connection type is {machine.connection.type}, not {protocol}")
    return machine
