"""vidseg.data"""
