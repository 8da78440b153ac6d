"""vidseg.engine"""
