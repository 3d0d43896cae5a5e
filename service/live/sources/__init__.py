"""Where a live call's audio comes from: the bank's switch (native frames), Twilio media streams, demo calls."""
