import pickle

from forgeline.errors import ConfigError, StorageError


def test_errors_survive_pickling_with_their_message():
    """Ray ships worker exceptions to the driver by pickling them."""
    for error in (ConfigError("steps", 0, "must be ≥ 1"),
                  StorageError("root", "s3://x", "cannot write here")):
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and str(clone) == str(error)
        assert clone.field == error.field and clone.reason == error.reason
