"""CPU seconds to build one AWS client: a boto3 Session with a data loader of its own (each client
parses botocore's service models again) against `crpbot_assets.sagemaker.aws.new_session` (one
shared loader). Side by side in one process; the ratio is what to compare (the machine is shared).
Usage: python bench/aws_clients.py [rounds]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import boto3

from crpbot_assets.sagemaker.aws import new_session

SERVICES = ("sagemaker", "s3", "sts", "logs")  # what a SageMaker run's clients cover


def cpu_per_client(make_session: Callable[[], boto3.session.Session], rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        for service in SERVICES:
            make_session().client(service, region_name="us-east-1")
    return (time.process_time() - start) / (rounds * len(SERVICES))


def main(rounds: int) -> None:
    cpu_per_client(new_session, 1)  # the shared loader's first parse is not what is compared
    own, shared = cpu_per_client(boto3.session.Session, rounds), cpu_per_client(new_session, rounds)
    print(f"{len(SERVICES)} services x {rounds} rounds, CPU s per client:")
    print(f"  a loader of its own   {own:.3f}")
    print(f"  the shared loader     {shared:.3f}")
    print(f"  ratio                 {own / shared:.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
