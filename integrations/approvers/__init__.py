"""Approvers' one-time codes (RFC 6238, pyotp) and the encryption of their secrets."""
