"""Where the service's state lives: the engine and sessions (`db`), the tables (`models`), the
queue's SQL (`queue`), stored bytes <-> tensors (`store`), where blobs are kept (`blobs`), and
bringing a database up to date (`migrate`)."""
