"""The soak bench: steady load for minutes; RSS and open files sampled every second."""
