//! CoAP message layer (being written).
