"""UCADI: federated chest-CT COVID-19 diagnosis with LWE-encrypted FedAvg."""

__version__ = "0.1.0"
